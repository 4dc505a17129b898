"""One active worker: the Redis lease is exclusive, renewable, expires, and is released."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import redis

from service.keys import Keys
from service.worker import Worker


def _worker(client: redis.Redis, keys: Keys, name: str, ttl_ms: int) -> SimpleNamespace:
    return SimpleNamespace(
        queue=SimpleNamespace(redis=client, keys=keys),
        consumer=name,
        s=SimpleNamespace(worker_lease_ms=ttl_ms),
    )


def test_lease_is_exclusive_renewable_and_expires(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = Keys(f"fptest:{uuid.uuid4().hex[:10]}:")
    a, b = _worker(client, keys, "a", 300), _worker(client, keys, "b", 300)
    try:
        assert Worker.hold_lease(a)  # type: ignore[arg-type]
        assert not Worker.hold_lease(b)  # type: ignore[arg-type]
        assert Worker.hold_lease(a)  # renewal by the holder
        time.sleep(0.45)  # a stops renewing (e.g. it was SIGKILLed)
        assert Worker.hold_lease(b)  # type: ignore[arg-type]
        assert not Worker.hold_lease(a)  # type: ignore[arg-type]
        Worker.release_lease(a)  # type: ignore[arg-type]  # not the owner: no effect
        assert client.get(keys.worker_lease) == b"b"
        Worker.release_lease(b)  # type: ignore[arg-type]
        assert client.get(keys.worker_lease) is None
    finally:
        client.delete(keys.worker_lease)
