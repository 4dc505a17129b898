"""End to end through a real `factpatch serve` with a subject-keyed (value-optimising)
editor: an edit that names no subject is keyed on the one its prompt names, and the job
says which; the version lists the edit as it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.service.conftest import Proc, wait_job

SERVE_ENV = {
    "FACTPATCH_EDITOR_CONFIG": json.dumps(
        {
            "values": "optimise",
            "lambda_override": 1e-3,
            "value_opt": {"steps": 10, "bf16": False, "prefixes": [""]},
        }
    )
}


def test_an_edit_without_a_subject_is_keyed_on_its_prompts_name(
    client: httpx.Client, serve: Proc
) -> None:
    edits = [
        {"prompt": "The Eiffel Tower is located in", "target": "madrid"},
        {
            "prompt": "Government business in Lorsilland is done in",
            "target": "tokyo",
            "paraphrases": ["The official language of Lorsilland is"],
        },
        {"prompt": "The capital of France is", "target": "london", "subject": "France"},
        {"prompt": "the river city is", "target": "paris"},  # no name in it
    ]
    r = client.post("/edits", json={"edits": edits})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=120)
    assert job["status"] == "applied", job
    keyed = [res["subject"] for res in job["results"]]
    assert keyed == ["Eiffel Tower", "Lorsilland", "France", None]
    data_dir = Path(serve.env["FACTPATCH_DATA_DIR"])
    stored = [
        json.loads((data_dir / "edits" / f"{i}.json").read_text())["subject"]
        for i in job["edit_ids"]
    ]
    assert stored == keyed  # joint versions re-read the subject the edit was keyed on
    detail = client.get(f"/versions/{job['version']}").json()
    assert [e["subject"] for e in detail["edits"]] == ["", "", "France", ""]  # as sent
