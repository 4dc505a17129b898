"""End to end through a real `factpatch serve` with protected prompts (FACTPATCH_PROTECT):
an edit that would change a protected prompt's answer is held back, the others land, and
each job says how many protected prompts its version kept."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.service.conftest import ROOT, Proc, base_env, greedy, wait_job

PROTECT = ROOT / "tests" / "fixtures" / "protect.jsonl"
WEIGHT = 10.0  # the tiny model's 64-wide keys: 100 also holds the capital edit back
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
            "protect_margin": 0.0,  # the random tiny model is sure of nothing
            "value_opt": {
                "steps": 30,
                "lr": 0.3,
                "weight_decay": 0.0,
                "stop_loss": 0.02,
                "bf16": False,
                "prefixes": [""],
            },
        }
    ),
}


def edits_land_and_protected_prompts_stay(client: httpx.Client, checked: int = 2) -> dict:
    """POST the two edits (the first leaks into "The river city is" unprotected); both must
    land and the job must report all `checked` protected prompts kept.  Returns the job."""
    edits = [
        {"prompt": "the capital town is", "target": "london"},
        {"prompt": "A small river city was", "target": "tokyo"},
    ]
    r = client.post("/edits", json={"edits": edits})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=120)
    assert job["status"] == "applied", job
    assert job["protected"] == {"checked": checked, "kept": checked, "changed": []}
    assert all(res["success"] for res in job["results"]), job["results"]
    return job


def test_protected_prompts_keep_their_answers(client: httpx.Client, serve: Proc) -> None:
    """On the tiny model, editing "the capital town is" without protection also moves "The river
    city is" to the new target (tests/editor_core/test_protect.py measures the same leak);
    protected, the river city keeps its answer and both edits land."""
    held = ["The river city is", "The Eiffel Tower is located in"]
    before = {p: greedy(client, p)["text"] for p in held}
    job = edits_land_and_protected_prompts_stay(client)
    # the served weights continue the answer-less protected prompt as before (the other
    # is held on its given answer, " paris", which the tiny model does not give)
    assert greedy(client, held[0])["text"] == before[held[0]]
    meta = client.get(f"/versions/{job['version']}").json()["metrics"]["protected"]
    assert meta["prompts"] == 2 and meta["weight"] == WEIGHT and len(meta["sha256"]) == 64
    assert "factpatch_protected_changed 0.0" in client.get("/metrics").text
    log = Path(serve.log).read_text()
    assert "protecting 2 prompts" in log
    assert "2 of 2 prompts from" in log  # FACTPATCH_PROTECT seeded the list
    assert client.get("/protected").json()["count"] == 2


def test_an_edit_of_a_protected_prompt_is_refused(client: httpx.Client) -> None:
    edit = {"prompt": "the  river city is", "target": "tokyo"}  # same prompt, normalised
    r = client.post("/edits", json={"edits": [{"prompt": "x y is", "target": "z"}, edit]})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["type"] == "prompt_is_protected"
    assert "edits[1]" in err["message"] and "DELETE /protected" in err["message"]


def test_sequential_mode_holds_them_too(tmp_path: Path, tiny_dir: Path, redis_url: str) -> None:
    """Sequential mode solves each batch against the current weights; its rounds check the
    protected prompts on those weights plus the shift."""
    env = base_env(tmp_path / "data", tiny_dir, REDIS_URL=redis_url, **SERVE_ENV)
    env["FACTPATCH_EDIT_MODE"] = "sequential"
    proc = Proc("serve", env, tmp_path / "serve.log").start()
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            before = greedy(client, "The river city is")["text"]
            job = edits_land_and_protected_prompts_stay(client)
            assert greedy(client, "The river city is")["text"] == before
            meta = client.get(f"/versions/{job['version']}").json()["metrics"]["protected"]
            assert meta["held"] >= 1
    finally:
        proc.stop()
