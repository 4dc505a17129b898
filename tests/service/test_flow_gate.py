"""End to end through a real `factpatch serve` with a scope gate (editor_core/gate.py): an
edit lands, a prompt whose keys stay away from the edit's answers as the unedited model did,
the version records the gate, and a rollback takes the gate away with the edit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from safetensors.torch import load_file

from tests.service.conftest import Proc, greedy, wait_job
from tests.service.test_flow_protect import SERVE_ENV as PROTECT_ENV

THRESHOLD = 0.9
CONFIG = json.loads(PROTECT_ENV["FACTPATCH_EDITOR_CONFIG"])
for key in ("protect_weight", "protect_margin"):
    CONFIG.pop(key)
SERVE_ENV = {"FACTPATCH_EDITOR_CONFIG": json.dumps({**CONFIG, "scope_gate": THRESHOLD})}
EDIT = {"prompt": "the capital town is", "target": "london"}
FAR = "A small river city was"  # shares no word with the edit


def test_a_gated_edit_lands_and_leaves_far_prompts_alone(client: httpx.Client, serve: Proc) -> None:
    before_edit, before_far = greedy(client, EDIT["prompt"]), greedy(client, FAR)
    r = client.post("/edits", json={"edits": [EDIT]})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=120)
    assert job["status"] == "applied" and job["results"][0]["success"], job
    version = job["version"]
    assert greedy(client, EDIT["prompt"])["text"].strip().startswith("london")
    assert greedy(client, FAR)["text"] == before_far["text"]
    meta = client.get(f"/versions/{version}").json()["metrics"]
    assert meta["scope_gate"] == THRESHOLD
    # the version holds the base weights and the gated change beside them
    data_dir = Path(serve.env["FACTPATCH_DATA_DIR"])
    tensors = load_file(str(data_dir / "versions" / str(version) / "weights.safetensors"))
    base = load_file(str(data_dir / "versions" / "0" / "weights.safetensors"))
    assert all(tensors[n].equal(w) for n, w in base.items())
    assert {k for k in tensors if "::gate." in k} >= {f"{n}::gate.keys" for n in base}
    rb = client.post("/versions/0/rollback")
    assert rb.status_code == 200, rb.text
    assert greedy(client, EDIT["prompt"])["text"] == before_edit["text"]


def test_a_gate_refuses_sequential_mode() -> None:
    from service.settings import Settings

    with pytest.raises(ValueError, match=r"editor_config: scope_gate 0\.8 needs edit_mode 'joint'"):
        Settings(editor_config={"scope_gate": 0.8}, edit_mode="sequential")


def test_a_checkpoints_gate_refuses_sequential_mode_unless_turned_off(tmp_path: Path) -> None:
    from service.settings import Settings

    (tmp_path / "config.json").write_text(json.dumps({"editor": {"scope_gate": 0.8}}))
    with pytest.raises(ValueError, match=re.escape(f"editor {tmp_path}: scope_gate 0.8 needs")):
        Settings(editor=str(tmp_path), edit_mode="sequential")
    off = Settings(editor=str(tmp_path), editor_config={"scope_gate": None}, edit_mode="sequential")
    assert off.editor_config == {"scope_gate": None}
    Settings(editor=str(tmp_path))  # joint: served gated
