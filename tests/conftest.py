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
    """A real Redis: $REDIS_URL, else the probed local one if it answers, else an embedded one.

    The probe address is $FACTPATCH_TEST_REDIS_PROBE (default 127.0.0.1:6379); point it at
    a dead port (e.g. 127.0.0.1:1) to exercise the embedded fallback.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    probe = f"redis://{os.environ.get('FACTPATCH_TEST_REDIS_PROBE', '127.0.0.1:6379')}/0"
    if _answers(probe):
        yield probe
        return
    from service.redis_client import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.close()


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
