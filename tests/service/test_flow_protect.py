"""End to end through a real `factpatch serve` with protected prompts (FACTPATCH_PROTECT):
an edit that would change a protected prompt's answer is held back, the others land, and
each job says how many protected prompts its version kept."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.service.conftest import ROOT, Proc, greedy, wait_job

PROTECT = ROOT / "tests" / "fixtures" / "protect.jsonl"
WEIGHT = 1000.0
# the value-optimising editor: its value differences are what the facts need, not the
# identity hyper-network's η × 1e7 (tests/service/conftest.py), which flips a prompt's
# answer with any leak at all
SERVE_ENV = {
    "FACTPATCH_PROTECT": str(PROTECT),
    "FACTPATCH_EDITOR_CONFIG": json.dumps(
        {
            "values": "optimise",
            "lambda_override": 1e-3,
            "protect_weight": WEIGHT,
            "value_opt": {"steps": 30, "bf16": False, "prefixes": [""]},
        }
    ),
}


def test_protected_prompts_keep_their_answers(client: httpx.Client, serve: Proc) -> None:
    held = ["The capital of France is", "The Eiffel Tower is located in"]
    before = {p: greedy(client, p)["text"] for p in [*held, "A small river city was"]}
    edits = [
        {"prompt": "The capital of France is", "target": "london"},
        {"prompt": "A small river city was", "target": "tokyo"},
    ]
    r = client.post("/edits", json={"edits": edits})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=120)
    assert job["status"] == "applied", job
    assert job["protected"] == {"checked": 2, "kept": 2, "changed": []}
    ok = {res["prompt"]: res["success"] for res in job["results"]}
    assert ok == {"The capital of France is": False, "A small river city was": True}
    for p in held:  # the served weights answer as before
        assert greedy(client, p)["text"] == before[p]
    assert greedy(client, "A small river city was")["text"].strip().startswith("tokyo")
    meta = client.get(f"/versions/{job['version']}").json()["metrics"]["protected"]
    assert meta["prompts"] == 2 and meta["weight"] == WEIGHT and len(meta["sha256"]) == 64
    metrics = client.get("/metrics").text
    assert "factpatch_protected_changed 0.0" in metrics
    log = Path(serve.log).read_text()
    assert "protecting 2 prompts" in log
