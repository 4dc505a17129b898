"""The docker-compose/Kubernetes split: two `factpatch api` replicas and one `factpatch
worker` sharing Redis and a data directory.  Both replicas must follow `current`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.service.conftest import FACTS, Proc, base_env, greedy, wait_job


def _until(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError


def test_two_api_replicas_follow_the_worker(tmp_path: Path, tiny_dir: Path, redis_url: str):
    env = base_env(tmp_path / "data", tiny_dir, REDIS_URL=redis_url)
    worker = Proc("worker", env, tmp_path / "worker.log").start()
    api_a = Proc("api", env, tmp_path / "a.log").start()
    api_b = Proc(
        "api",
        {**env, "FACTPATCH_PORT": base_env(tmp_path, tiny_dir)["FACTPATCH_PORT"]},
        tmp_path / "b.log",
    ).start()
    try:
        api_a.wait_ready()
        api_b.wait_ready()
        with (
            httpx.Client(base_url=api_a.url, timeout=60) as a,
            httpx.Client(base_url=api_b.url, timeout=60) as b,
        ):
            base = greedy(b, FACTS[0][0])
            assert base["version"] == 0
            prompt, target = FACTS[0]
            r = a.post("/edits", json={"edits": [{"prompt": prompt, "target": target}]})
            assert r.status_code == 202, r.text
            job = wait_job(b, r.json()["job_id"])  # job state is shared through Redis
            assert job["status"] == "applied" and job["version"] == 1
            # Replica B never saw the edit request; it learns of v1 through pub/sub.
            _until(lambda: greedy(b, prompt)["version"] == 1)
            assert greedy(b, prompt) == greedy(a, prompt)
            assert greedy(b, prompt)["text"].strip().startswith(target)
            assert b.post("/versions/0/rollback").status_code == 200
            _until(lambda: greedy(a, prompt)["version"] == 0)
            assert greedy(a, prompt)["text"] == base["text"]
    finally:
        for p in (api_a, api_b, worker):
            p.stop()
