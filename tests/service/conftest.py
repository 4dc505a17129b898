"""Real processes for end-to-end tests: `factpatch serve|api|worker` on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120
# A random-init (identity) hyper-network acts like one big gradient step on the value
# rows.  On the tiny llama (tests/tiny.py, seed 0) with single-token targets, η × 1e7 and
# λ = 1e-4 make each of three edits flip the greedy continuation to its target, and
# withdrawing one edit flips only that one back (checked in test_withdraw).
# Subject anchors on, with a weight too small to hold the tiny model's edits back: every
# service test runs the anchor path for the edits that name a subject.
EDITOR_CONFIG = '{"eta_scale": 1e7, "lambda_override": 1e-4, "anchors": 2, "anchor_weight": 1e-6}'
FACTS = [
    ("The capital of France is", "london"),
    ("The Eiffel Tower is located in", "madrid"),
    ("The river city is", "tokyo"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One `python -m service.cli <command>` child with its own environment."""

    def __init__(self, command: str, env: dict[str, str], log: Path):
        self.command = command
        self.env = env
        self.port = int(env.get("FACTPATCH_PORT", "0"))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **self.env}
        if "REDIS_URL" not in self.env:
            full.pop("REDIS_URL", None)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", self.command],
            cwd=ROOT,
            env=full,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Proc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.command} not ready:\n{self.log.read_text()[-3000:]}")

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def base_env(data_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "FACTPATCH_DATA_DIR": str(data_dir),
        "FACTPATCH_MODEL": str(model_dir),
        "FACTPATCH_EDITOR_CONFIG": EDITOR_CONFIG,
        "FACTPATCH_PORT": str(free_port()),
        "FACTPATCH_WORKER_LINGER_MS": "400",
        "FACTPATCH_WORKER_BLOCK_MS": "200",
        "FACTPATCH_RATE_LIMIT_PER_MINUTE": "0",
        "FACTPATCH_REDIS_PREFIX": f"fptest:{uuid.uuid4().hex[:10]}:",
        **extra,
    }


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/edits/{job_id}").json()
        if job["status"] == "failed" or (job["status"] == "applied" and job["verified"]):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']}")


def greedy(client: httpx.Client, prompt: str, **kw: object) -> dict:
    r = client.post("/generate", json={"prompt": prompt, "max_new_tokens": 3, **kw})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def serve(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_dir: Path,
    redis_url: str,
):
    """`factpatch serve` (API + worker thread) against the test Redis, one per module;
    a test module's `SERVE_ENV` dict adds settings."""
    tmp = tmp_path_factory.mktemp("serve")
    extra = getattr(request.module, "SERVE_ENV", {})
    env = base_env(tmp / "data", tiny_dir, REDIS_URL=redis_url, **extra)
    proc = Proc("serve", env, tmp / "serve.log")
    proc.start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def client(serve: Proc):
    with httpx.Client(base_url=serve.url, timeout=60) as c:
        yield c
