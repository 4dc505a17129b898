"""The protected list at run time (`/protected`), through real processes and a real Redis:
what the API adds or removes, the next version holds; bad lists get named errors; the list
is shared by a split API and worker and outlives a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from editor_core.data.formats import LocalityPrompt
from service.keys import Keys
from service.protected import ListFullError, ProtectedList
from tests.service.conftest import Proc, base_env, greedy, wait_job
from tests.service.test_flow_protect import SERVE_ENV as FILE_ENV
from tests.service.test_flow_protect import edits_land_and_protected_prompts_stay
from tests.service.test_split_processes import _until

# the protection settings of test_flow_protect.py, without a seed file
SERVE_ENV = {
    "FACTPATCH_EDITOR_CONFIG": FILE_ENV["FACTPATCH_EDITOR_CONFIG"],
    "FACTPATCH_MAX_PROTECTED": "4",
}
RIVER = "The river city is"
EIFFEL = {"prompt": "The Eiffel Tower is located in", "answer": "paris"}


def test_the_list_in_redis(redis_url: str, redis_prefix: str) -> None:
    plist = ProtectedList(redis.Redis.from_url(redis_url), Keys(redis_prefix))
    assert plist.snapshot() == (0, [])
    change = plist.add([LocalityPrompt("B is"), LocalityPrompt("a  is.", "x")])
    assert (change.changed, change.count, change.revision) == (2, 2, 1)
    assert plist.add([LocalityPrompt("B is")]).revision == 1  # nothing moved: same revision
    assert plist.add([LocalityPrompt("A is", "x")], only_new=True).revision == 1
    change = plist.add([LocalityPrompt("A is", "y")])  # re-answered: a change, not a new one
    assert (change.changed, change.count, change.revision) == (0, 2, 2)
    assert plist.snapshot() == (2, [LocalityPrompt("A is", "y"), LocalityPrompt("B is")])
    assert plist.which(["a is", "c is", "B  is!"]) == {"a is", "b is"}
    change, missing = plist.remove(["b is", "c is"])
    assert (change.changed, change.count, change.revision, missing) == (1, 1, 3, ["c is"])
    assert plist.remove(["c is"])[0].revision == 3
    with pytest.raises(ListFullError, match="1 protected prompts \\+ 2 new"):
        plist.add(
            [LocalityPrompt("A is", "z"), LocalityPrompt("c is"), LocalityPrompt("d")], limit=2
        )
    assert plist.snapshot() == (3, [LocalityPrompt("A is", "y")])  # nothing written
    assert plist.add([LocalityPrompt("A is", "z"), LocalityPrompt("c is")], limit=2).count == 2
    assert plist.replace([]).count == 0 and plist.revision() == 5


def test_protect_edit_and_unprotect_through_the_api(client: httpx.Client) -> None:
    r = client.get("/protected")
    assert r.status_code == 200
    listed = r.json()
    assert listed.pop("held_revision") in (None, 0)  # 0 once the worker has read the empty list
    assert listed == {"count": 0, "revision": 0, "offset": 0, "prompts": []}
    before = greedy(client, RIVER)["text"]
    r = client.post("/protected", json={"prompts": [{"prompt": RIVER}, EIFFEL]})
    assert r.status_code == 200, r.text
    assert r.json() == {"changed": 2, "count": 2, "revision": 1, "not_found": []}
    page = client.get("/protected", params={"offset": 1, "limit": 1}).json()
    assert page["count"] == 2 and page["prompts"] == [{"prompt": RIVER, "answer": None}]
    # an idle worker reads the changed list before any edit arrives, and says so
    _until(lambda: client.get("/protected").json()["held_revision"] == 1)
    assert "factpatch_protected_prompts 2.0" in client.get("/metrics").text

    # the next version holds it: the edit that leaks into the river city lands, the river
    # city keeps its answer, and the version records the list it held
    job = edits_land_and_protected_prompts_stay(client)
    assert greedy(client, RIVER)["text"] == before
    meta = client.get(f"/versions/{job['version']}").json()["metrics"]["protected"]
    assert meta["prompts"] == 2 and meta["revision"] == 1

    r = client.post("/edits", json={"edits": [{"prompt": RIVER, "target": "tokyo"}]})
    assert r.status_code == 409 and r.json()["error"]["type"] == "prompt_is_protected"
    edit = {"prompt": "The old river city is", "target": "tokyo", "paraphrases": [RIVER]}
    r = client.post("/edits", json={"edits": [edit]})
    assert r.status_code == 409 and r.json()["error"]["type"] == "prompt_is_protected"
    assert "edits[0].paraphrases[0]" in r.json()["error"]["message"]
    # a live edit's prompt cannot be protected: the next version would undo the edit
    r = client.post("/protected", json={"prompts": [{"prompt": "The capital town is"}]})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["type"] == "prompt_is_edited"

    r = client.request(
        "DELETE", "/protected", json={"prompts": ["the  river city is", "no such prompt"]}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"changed": 1, "count": 1, "revision": 2, "not_found": ["no such prompt"]}
    r = client.post("/edits", json={"edits": [{"prompt": RIVER, "target": "tokyo"}]})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=120)
    assert job["status"] == "applied" and job["results"][0]["success"], job
    assert job["protected"]["checked"] == 1
    meta = client.get(f"/versions/{job['version']}").json()["metrics"]["protected"]
    assert meta["prompts"] == 1 and meta["revision"] == 2
    # a live edit's paraphrase is the edit too
    edit = {"prompt": "The old town was", "target": "paris", "paraphrases": ["The old city was"]}
    r = client.post("/edits", json={"edits": [edit]})
    assert wait_job(client, r.json()["job_id"], timeout=120)["status"] == "applied"
    r = client.post("/protected", json={"prompts": [{"prompt": "the old city was"}]})
    assert r.status_code == 409 and r.json()["error"]["type"] == "prompt_is_edited", r.text


@pytest.mark.parametrize(
    ("method", "body", "error"),
    [
        ("POST", {"prompts": [{"prompt": "  "}]}, "empty_text"),
        ("POST", {"prompts": [{"prompt": "a b", "answer": ""}]}, "empty_text"),
        ("PUT", {"prompts": [{"prompt": "x" * 1001}]}, "text_too_long"),
        ("POST", {"prompts": [{"prompt": "a b " * 200}]}, "too_many_tokens"),
        (
            "POST",
            {"prompts": [{"prompt": "a b", "answer": "c"}, {"prompt": "A b"}]},
            "conflicting_answers",
        ),
        ("PUT", {"prompts": [{"prompt": f"p{i} is"} for i in range(5)]}, "too_many_prompts"),
        ("POST", {"prompts": [{"prompt": "a b", "why": "c"}]}, "validation_error"),
        ("POST", {"prompts": "a b"}, "validation_error"),
        ("DELETE", {"prompts": [{"prompt": "a b"}]}, "validation_error"),
    ],
)
def test_bad_lists_get_named_errors(
    client: httpx.Client, method: str, body: dict, error: str
) -> None:
    before = client.get("/protected").json()
    r = client.request(method, "/protected", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == error
    assert client.get("/protected").json() == before  # nothing changed


def test_a_full_list_refuses_new_prompts(client: httpx.Client) -> None:
    old = client.get("/protected").json()["prompts"]
    try:
        r = client.put("/protected", json={"prompts": [{"prompt": f"p{i} is"} for i in range(4)]})
        assert r.status_code == 200 and r.json()["count"] == 4
        r = client.post("/protected", json={"prompts": [{"prompt": "p9 is"}]})
        assert r.status_code == 409 and r.json()["error"]["type"] == "protected_list_full"
        assert "FACTPATCH_MAX_PROTECTED" in r.json()["error"]["message"]
        r = client.post("/protected", json={"prompts": [{"prompt": "p0 is", "answer": "z"}]})
        assert r.status_code == 200 and r.json()["changed"] == 0  # re-answered, not new
        assert client.put("/protected", json={"prompts": []}).json()["count"] == 0
    finally:
        client.put("/protected", json={"prompts": old})


def test_split_processes_share_the_list(tmp_path: Path, tiny_dir: Path, redis_url: str) -> None:
    """An API replica protects a prompt while an edit of it waits in the queue: the worker
    (another process) fails that job by name and applies the rest; a restarted API still
    lists the prompt."""
    env = base_env(tmp_path / "data", tiny_dir, REDIS_URL=redis_url, **SERVE_ENV)
    api = Proc("api", env, tmp_path / "api.log").start()
    worker = None
    try:
        api.wait_ready()
        with httpx.Client(base_url=api.url, timeout=60) as client:
            queued = client.post("/edits", json={"edits": [{"prompt": RIVER, "target": "tokyo"}]})
            other = client.post(
                "/edits", json={"edits": [{"prompt": "A small river city was", "target": "tokyo"}]}
            )
            assert queued.status_code == other.status_code == 202
            r = client.post("/protected", json={"prompts": [{"prompt": RIVER}]})
            assert r.status_code == 200, r.text
            worker = Proc("worker", env, tmp_path / "worker.log").start()
            failed = wait_job(client, queued.json()["job_id"], timeout=120)
            assert failed["status"] == "failed", failed
            assert failed["error"].startswith("prompt_is_protected"), failed
            applied = wait_job(client, other.json()["job_id"], timeout=120)
            assert applied["status"] == "applied", applied
            assert applied["protected"]["checked"] == 1
        api.stop()
        api = Proc("api", env, tmp_path / "api2.log").start().wait_ready()
        with httpx.Client(base_url=api.url, timeout=60) as client:
            listed = client.get("/protected").json()
            assert listed["count"] == 1 and listed["prompts"][0]["prompt"] == RIVER
    finally:
        api.stop()
        if worker is not None:
            worker.stop()
