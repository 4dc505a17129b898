"""API keys (sha256, constant-time compare, scopes) and a per-client rate limit."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated, Any, cast

import redis
from fastapi import Depends, Request

from service.errors import ApiError
from service.settings import ApiKey, hash_key

RATE_WINDOW_S = 60


@dataclass(frozen=True)
class Principal:
    name: str  # key name, or the client address when no keys are configured
    scopes: frozenset[str]


def _match(keys: list[ApiKey], presented: str) -> ApiKey | None:
    digest = hash_key(presented)
    found = None
    for key in keys:  # compare against every key: timing does not reveal which matched
        if hmac.compare_digest(digest, key.sha256):
            found = key
    return found


def principal(request: Request) -> Principal:
    settings = request.app.state.settings
    if not settings.api_keys:
        host = request.client.host if request.client else "local"
        return Principal(host, frozenset({"generate", "edit", "admin"}))
    auth = request.headers.get("authorization", "")
    presented = (
        auth[7:].strip()
        if auth.lower().startswith("bearer ")
        else request.headers.get("x-api-key", "")
    )
    if not presented:
        raise ApiError("unauthorized", "missing API key (Authorization: Bearer <key>)")
    key = _match(settings.api_keys, presented)
    if key is None:
        raise ApiError("unauthorized", "invalid API key")
    scopes = set(key.scopes)
    if "admin" in scopes:
        scopes |= {"generate", "edit"}
    return Principal(key.name, frozenset(scopes))


def rate_limit(request: Request, who: Principal) -> None:
    limit = request.app.state.settings.rate_limit_per_minute
    if not limit:
        return
    state = request.app.state
    window = int(time.time() // RATE_WINDOW_S)
    key = state.keys.rate(who.name, window)
    pipe = state.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, RATE_WINDOW_S * 2)
    try:
        count = int(cast(list[Any], pipe.execute())[0])
    except redis.exceptions.RedisError:
        return  # fail open: generation keeps working while Redis is down
    if count > limit:
        retry = int(RATE_WINDOW_S - time.time() % RATE_WINDOW_S) + 1
        raise ApiError("rate_limited", f"more than {limit} requests a minute", retry_after=retry)


def require(scope: str) -> Any:
    """Dependency: a principal holding `scope`, within the rate limit."""

    def dep(request: Request, who: Annotated[Principal, Depends(principal)]) -> Principal:
        if scope not in who.scopes:
            raise ApiError("forbidden", f"this key lacks the {scope!r} scope")
        rate_limit(request, who)
        return who

    return dep


Reader = Annotated[Principal, Depends(principal)]
Generator = Annotated[Principal, Depends(require("generate"))]
Editor = Annotated[Principal, Depends(require("edit"))]
Admin = Annotated[Principal, Depends(require("admin"))]
