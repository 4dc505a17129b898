"""The FastAPI application, built by `create_app`; all state lives on `app.state`.

Start-up does not block: the model loads and the state is reconciled in a background
thread, and `/health/ready` answers 503 until the model and the current version are
loaded and verified.  `/health/live` answers at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine import Engine
from service.errors import ApiError, error_response, install_handlers
from service.metrics import Metrics
from service.routes import edits, generate, health, protected, versions
from service.routes import metrics as metrics_route
from service.runtime import Shared, bootstrap, load_served_model, open_shared, seed_protected
from service.settings import Settings

log = logging.getLogger(__name__)

STARTUP_RETRY_S = 1.0


class BodyLimit:
    """413 for bodies over the limit, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error_response("body_too_large", f"body over {self.limit} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError("body_too_large", f"body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


def _bring_up(app: FastAPI, stop: threading.Event) -> None:
    """Load the model, reconcile state, start following `current`; retry while Redis is down."""
    state = app.state
    shared: Shared = state.shared
    try:
        loaded = state.loaded or load_served_model(state.settings)
    except Exception as exc:
        state.startup_error = f"model failed to load: {exc}"
        log.exception("model failed to load")
        return
    state.loaded = loaded
    while not stop.is_set():
        try:
            bootstrap(shared, loaded)
            seed_protected(shared)
            engine = Engine(
                loaded,
                shared.store,
                state.settings.engine_version_cache,
                state.settings.engine_poll_s,
            )
            engine.sync()
            engine.warm()
            engine.follow(shared.redis, shared.keys.channel)
            state.engine = engine
            log.info("ready: serving version %s", engine.current)
            return
        except redis.exceptions.RedisError as exc:
            state.startup_error = f"Redis unavailable: {exc}"
            log.warning("start-up waiting for Redis: %s", exc)
            stop.wait(STARTUP_RETRY_S)
        except Exception as exc:
            state.startup_error = str(exc)
            log.exception("start-up failed")
            return


def create_app(
    settings: Settings,
    redis_url: str,
    loaded: Any = None,
    on_ready: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """Build the app.  `loaded` reuses an already-loaded model; `on_ready` runs after start-up."""
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def up() -> None:
            _bring_up(app, stop)
            if on_ready is not None and app.state.engine is not None:
                on_ready(app)

        threading.Thread(target=up, name="startup", daemon=True).start()
        yield
        stop.set()
        if app.state.engine is not None:
            app.state.engine.stop()

    app = FastAPI(
        title="factpatch",
        version="0.1.0",
        description="Correct the facts a language model knows, live (MALMEN). Errors are "
        '`{"error": {"type", "message"}}`.',
        lifespan=lifespan,
    )
    shared = open_shared(settings, redis_url)
    app.state.settings = settings
    app.state.shared = shared
    app.state.keys = shared.keys
    app.state.redis = shared.redis
    app.state.loaded = loaded
    app.state.engine = None
    app.state.startup_error = None
    app.state.metrics = Metrics()
    app.state.stop = stop
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Any]) -> Response:
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        m: Metrics = request.app.state.metrics
        m.requests.labels(path, str(response.status_code)).inc()
        m.latency.labels(path).observe(time.perf_counter() - t0)
        return response

    for module in (edits, generate, versions, protected, health, metrics_route):
        app.include_router(module.router)
    return app
