"""The real thing: `factpatch serve` with SmolLM2-135M-Instruct and the shipped editor."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.editor_core.test_loading import CONVERTED, _require_default_model
from tests.service.conftest import Proc, base_env, greedy, wait_job

CHECKPOINTS = Path(__file__).resolve().parents[2] / "editor_core/checkpoints"
SHIPPED = CHECKPOINTS / "smollm2-135m-instruct"
OPTIMISING = CHECKPOINTS / "smollm2-135m-instruct-optimise"


@pytest.mark.parametrize(
    ("editor", "subject"),
    [(None, None), (OPTIMISING, "France")],
    ids=["shipped-default", "optimising-with-subject"],
)
def test_real_edit_changes_the_answer_and_rollback_restores_it(
    tmp_path: Path, redis_url: str, editor: Path | None, subject: str | None
) -> None:
    _require_default_model()
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    # Share the converted model instead of converting it again.
    os.symlink(CONVERTED.resolve(), data / "models" / CONVERTED.name)
    env = base_env(data, Path("smollm2-135m-instruct"), REDIS_URL=redis_url)
    env["FACTPATCH_EDITOR_CONFIG"] = "{}"  # the shipped editor as it is served by default
    env["FACTPATCH_MODEL"] = "smollm2-135m-instruct"
    if editor is not None:
        env["FACTPATCH_EDITOR"] = str(editor)  # its layers (3-8) come from its config
    if not ((editor or SHIPPED) / "manifest.json").is_file():
        pytest.fail(f"shipped editor missing: {editor or SHIPPED}")
    proc = Proc("serve", env, tmp_path / "serve.log").start()
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=120) as client:
            before = greedy(client, "The capital of France is")
            assert before["version"] == 0 and before["text"].startswith(" Paris")
            edit = {"prompt": "The capital of France is", "target": "Rome"}
            if subject:
                edit["subject"] = subject
            r = client.post("/edits", json={"edits": [edit]})
            assert r.status_code == 202, r.text
            job = wait_job(client, r.json()["job_id"], timeout=120)
            assert job["status"] == "applied" and job["results"][0]["success"], job
            after = greedy(client, "The capital of France is")
            assert after["version"] == job["version"] and after["text"].startswith(" Rome")
            assert client.post("/versions/0/rollback").json()["current"] == 0
            back = greedy(client, "The capital of France is")
            assert back == before
    finally:
        proc.stop()
