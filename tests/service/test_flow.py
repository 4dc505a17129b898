"""End to end through a real `factpatch serve`: edit → version → generate → rollback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import torch
from safetensors.torch import load_file

from tests.service.conftest import FACTS, Proc, greedy, wait_job

SUBJECTS = {"The capital of France is": "France"}
# sent with the France edit: stored beside its rows (used by value-optimising editors)
EXTRA = {"keep": ["The language of France is"], "paraphrases": ["France's capital is"]}


def _post(client: httpx.Client, facts: list[tuple[str, str]], **headers: str) -> httpx.Response:
    edits = [{"prompt": p, "target": t} for p, t in facts]
    body = {
        "edits": [
            {**e, "subject": SUBJECTS[e["prompt"]], **EXTRA} if e["prompt"] in SUBJECTS else e
            for e in edits
        ]
    }
    return client.post("/edits", json=body, headers=headers)


def _holds(client: httpx.Client, prompt: str, target: str) -> bool:
    return greedy(client, prompt)["text"].strip().startswith(target)


def test_edit_coalesce_pin_withdraw_rollback(client: httpx.Client, serve: Proc, tiny_dir: Path):
    base = {p: greedy(client, p) for p, _ in FACTS}
    assert all(r["version"] == 0 for r in base.values())
    assert not any(base[p]["text"].strip().startswith(t) for p, t in FACTS)

    # Two jobs posted together coalesce into one version.
    r1, r2 = _post(client, FACTS[:1]), _post(client, FACTS[1:2])
    assert r1.status_code == r2.status_code == 202, (r1.text, r2.text)
    j1, j2 = wait_job(client, r1.json()["job_id"]), wait_job(client, r2.json()["job_id"])
    assert j1["status"] == j2["status"] == "applied"
    assert j1["version"] == j2["version"] == 1
    assert j1["verified"] and j2["verified"]  # `results` are stored (wait_job waits for it)
    assert j1["results"][0]["success"] and j2["results"][0]["success"], (j1, j2)
    # the hyper-network editor keys where the prompt predicts: no subject is looked for
    assert (j1["results"][0]["subject"], j2["results"][0]["subject"]) == ("France", None)
    versions = client.get("/versions").json()
    assert versions["current"] == 1
    v1 = versions["versions"][-1]
    assert v1["parent"] == 0 and sorted(v1["edit_ids"]) == sorted(j1["edit_ids"] + j2["edit_ids"])
    detail = client.get("/versions/1").json()
    assert {e["target"] for e in detail["edits"]} == {"london", "madrid"}
    assert {e["subject"] for e in detail["edits"]} == {"France", ""}
    sent = {e["edit_id"]: e for e in detail["edits"]}
    assert {k: sent[j1["edit_ids"][0]][k] for k in EXTRA} == EXTRA  # listed as sent
    assert sent[j2["edit_ids"][0]]["keep"] == sent[j2["edit_ids"][0]]["paraphrases"] == []
    data_dir = Path(serve.env["FACTPATCH_DATA_DIR"])
    sidecar = json.loads((data_dir / "edits" / f"{j1['edit_ids'][0]}.json").read_text())
    assert {k: sidecar[k] for k in EXTRA} == EXTRA
    out = greedy(client, FACTS[0][0])
    assert out["version"] == 1 and out["text"].strip().startswith("london")
    v1_third = greedy(client, FACTS[2][0])

    # A third fact → version 2; a request pinned to version 1 still answers from version 1.
    j3 = wait_job(client, _post(client, FACTS[2:]).json()["job_id"])
    assert j3["version"] == 2
    assert all(_holds(client, p, t) for p, t in FACTS)
    pinned = greedy(client, FACTS[2][0], version=1)
    assert pinned == v1_third
    assert greedy(client, FACTS[2][0])["version"] == 2

    # Withdraw the second fact: the other two still hold, the withdrawn one does not.
    withdrawn = j2["edit_ids"][0]
    r = client.delete(f"/edits/{withdrawn}")
    assert r.status_code == 202, r.text
    j4 = wait_job(client, r.json()["job_id"])
    assert j4["status"] == "applied" and j4["version"] == 3
    assert j4["verified"] and j4["results"] == []  # nothing new to check: verified at once
    v3 = client.get("/versions/3").json()
    assert v3["withdrawn_edit_ids"] == [withdrawn] and withdrawn not in v3["live_edit_ids"]
    assert _holds(client, *FACTS[0]) and _holds(client, *FACTS[2])
    assert not _holds(client, *FACTS[1])
    assert client.delete(f"/edits/{withdrawn}").json()["error"]["type"] == "edit_not_live"

    # Rollback to the base: instant, outputs identical, stored tensors bit-identical to base.
    rb = client.post("/versions/0/rollback")
    assert rb.json() == {"current": 0, "previous": 3}
    for p, _ in FACTS:
        assert greedy(client, p) == base[p]
    data_dir = Path(serve.env["FACTPATCH_DATA_DIR"])
    stored = load_file(str(data_dir / "versions/0/weights.safetensors"))
    original = load_file(str(tiny_dir / "model.safetensors"))
    for name, t in stored.items():
        assert torch.equal(t, original[name + ".weight"]), name
    history = client.get("/versions").json()
    assert history["current"] == 0 and [v["version"] for v in history["versions"]] == [0, 1, 2, 3]
    events = (data_dir / "versions/events.jsonl").read_text()
    assert '"rollback"' in events

    # An edit after the rollback builds on version 0.
    j5 = wait_job(client, _post(client, FACTS[1:2]).json()["job_id"])
    assert j5["version"] == 4
    assert client.get("/versions/4").json()["parent"] == 0
    assert client.get("/versions/4").json()["live_edit_ids"] == j5["edit_ids"]

    # Roll forward to 2 (bit-exact copy of stored tensors): same answers as before.
    assert client.post("/versions/2/rollback").json() == {"current": 2, "previous": 4}
    assert greedy(client, FACTS[2][0], version=1) == v1_third
    assert all(_holds(client, p, t) for p, t in FACTS)


def test_idempotency(client: httpx.Client):
    first = _post(client, FACTS[:1], **{"Idempotency-Key": "k-1"})
    again = _post(client, FACTS[:1], **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert first.json()["edit_ids"] == again.json()["edit_ids"]
    other = _post(client, FACTS[1:2], **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "idempotency_conflict"
    wait_job(client, first.json()["job_id"])


def test_corrupt_version_is_refused(client: httpx.Client, serve: Proc):
    data_dir = Path(serve.env["FACTPATCH_DATA_DIR"])
    path = data_dir / "versions/1/weights.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    r = client.post("/versions/1/rollback")
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["type"] == "version_corrupt" and "sha256" in err["message"]
    assert client.get("/health/ready").status_code == 200  # current is untouched
    assert client.get("/versions").json()["current"] != 1
