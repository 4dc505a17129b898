"""API keys (hashed, scoped), placeholder refusal, rate limit with Retry-After."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from service.settings import Settings, hash_key

SERVE_ENV = {
    "FACTPATCH_API_KEYS": json.dumps(
        [
            {"name": "reader", "sha256": hash_key("gen-key-5f2a"), "scopes": ["generate"]},
            {"name": "ops", "sha256": hash_key("admin-key-9c1e"), "scopes": ["admin"]},
        ]
    ),
    "FACTPATCH_RATE_LIMIT_PER_MINUTE": "12",
}


def test_placeholder_secret_refused():
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(api_keys=[{"name": "x", "sha256": hash_key("changeme")}])


def test_keys_scopes_and_rate_limit(client: httpx.Client):
    gen = {"Authorization": "Bearer gen-key-5f2a"}
    admin = {"Authorization": "Bearer admin-key-9c1e"}
    body = {"prompt": "hi", "max_new_tokens": 1}
    assert client.post("/generate", json=body).json()["error"]["type"] == "unauthorized"
    r = client.post("/generate", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert client.post("/generate", json=body, headers=gen).status_code == 200
    r = client.post("/versions/0/rollback", headers=gen)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert client.post("/versions/0/rollback", headers=admin).status_code == 200
    # the protected list: any key reads it, only admin changes it
    assert client.get("/protected").status_code == 401
    assert client.get("/protected", headers=gen).json()["count"] == 0
    change = {"prompts": [{"prompt": "The capital of Italy is"}]}
    for method in ("POST", "PUT", "DELETE"):
        payload = change if method != "DELETE" else {"prompts": ["The capital of Italy is"]}
        r = client.request(method, "/protected", json=payload, headers=gen)
        assert r.status_code == 403, (method, r.text)
        r = client.request(method, "/protected", json=payload, headers=admin)
        assert r.status_code == 200, (method, r.text)
    statuses = [client.post("/generate", json=body, headers=gen).status_code for _ in range(12)]
    assert statuses[-1] == 429
    r = client.post("/generate", json=body, headers=gen)
    assert r.json()["error"]["type"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert client.post("/generate", json=body, headers=admin).status_code == 200  # own budget
