"""Bad input: every rule gives its named error type, never a 500; the server survives."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Proc, base_env, free_port

SERVE_ENV = {
    "FACTPATCH_MAX_EDITS_PER_REQUEST": "3",
    "FACTPATCH_MAX_PROMPT_CHARS": "200",
    "FACTPATCH_MAX_TARGET_CHARS": "40",
    "FACTPATCH_MAX_EDIT_TOKENS": "24",
    "FACTPATCH_MAX_NEW_TOKENS_CAP": "16",
    "FACTPATCH_MAX_GENERATE_PROMPT_TOKENS": "40",
    "FACTPATCH_MAX_BODY_BYTES": "4096",
}


def _edit(prompt: str = "The capital of France is", target: str = "london") -> dict:
    return {"prompt": prompt, "target": target}


CASES = [
    ("/edits", {"edits": []}, 422, "too_many_edits"),
    ("/edits", {"edits": [_edit()] * 4}, 422, "too_many_edits"),
    ("/edits", {"edits": [_edit(prompt="   ")]}, 422, "empty_text"),
    ("/edits", {"edits": [_edit(target="")]}, 422, "empty_text"),
    ("/edits", {"edits": [_edit(prompt="x" * 201)]}, 422, "text_too_long"),
    ("/edits", {"edits": [_edit(target="y" * 41)]}, 422, "text_too_long"),
    ("/edits", {"edits": [_edit(prompt="the city " * 20)]}, 422, "too_many_tokens"),
    (
        "/edits",
        {"edits": [_edit(), _edit(prompt="the capital of  France is.", target="rome")]},
        422,
        "conflicting_targets",
    ),
    ("/edits", {"edits": [{**_edit(), "subject": "Germany"}]}, 422, "subject_not_in_prompt"),
    ("/edits", {"edits": [{**_edit(), "subject": "  "}]}, 422, "empty_text"),
    ("/edits", {"edits": [{**_edit(), "subject": 7}]}, 422, "validation_error"),
    ("/edits", {"edits": [{**_edit(), "keep": ["France is in"]}]}, 422, "keep_without_subject"),
    (
        "/edits",
        {"edits": [{**_edit(), "subject": "France", "keep": ["Germany is in"]}]},
        422,
        "subject_not_in_keep_prompt",
    ),
    (
        "/edits",
        {"edits": [{**_edit(), "subject": "France", "keep": ["the capital of france  is"]}]},
        422,
        "keep_prompt_is_edited",
    ),
    ("/edits", {"edits": [{**_edit(), "subject": "France", "keep": [" "]}]}, 422, "empty_text"),
    (
        "/edits",
        {"edits": [{**_edit(), "subject": "France", "keep": ["France"] * 17}]},
        422,
        "validation_error",
    ),
    ("/edits", {"edits": [{"prompt": "a"}]}, 422, "validation_error"),
    ("/edits", {"edits": "nope"}, 422, "validation_error"),
    ("/edits", {"edits": [_edit()], "extra": 1}, 422, "validation_error"),
    ("/generate", {"prompt": ""}, 422, "empty_text"),
    ("/generate", {"prompt": "hi", "max_new_tokens": 17}, 422, "max_new_tokens_too_large"),
    ("/generate", {"prompt": "hi", "max_new_tokens": 0}, 422, "validation_error"),
    ("/generate", {"prompt": "hi", "temperature": -1}, 422, "validation_error"),
    ("/generate", {"prompt": "hi", "top_p": 0}, 422, "validation_error"),
    (
        "/generate",
        {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]},
        422,
        "too_many_stop_sequences",
    ),
    ("/generate", {"prompt": "the city " * 22}, 422, "too_many_tokens"),
    ("/generate", {"prompt": "hi", "version": 999}, 404, "version_not_found"),
]


@pytest.mark.parametrize(("path", "body", "status", "kind"), CASES)
def test_rule(client: httpx.Client, path: str, body: dict, status: int, kind: str):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind, r.text
    assert set(r.json()["error"]) == {"type", "message"}


def test_other_errors(client: httpx.Client):
    r = client.post("/edits", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"
    big = {"edits": [_edit(prompt="p" * 5000)]}
    r = client.post("/edits", json=big)
    assert r.status_code == 413 and r.json()["error"]["type"] == "body_too_large"
    r = client.post("/edits", json=[1], headers={"Idempotency-Key": "x" * 300})
    assert r.status_code == 422
    assert client.get("/edits/job_nope").json()["error"]["type"] == "job_not_found"
    assert client.get("/edits/job_nope").status_code == 404
    assert client.delete("/edits/e_nope").status_code == 404
    assert client.get("/versions/77").status_code == 404
    assert client.post("/versions/77/rollback").status_code == 404
    assert client.get("/nowhere").json()["error"]["type"] == "not_found"
    assert client.get("/health/ready").status_code == 200
    text = client.get("/metrics").text
    assert "factpatch_http_requests_total" in text and "factpatch_current_version" in text
    assert client.get("/openapi.json").json()["paths"]["/generate"]


def test_stream_and_stop(client: httpx.Client):
    plain = client.post("/generate", json={"prompt": "The capital of", "max_new_tokens": 8}).json()
    with client.stream(
        "POST", "/generate", json={"prompt": "The capital of", "max_new_tokens": 8, "stream": True}
    ) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert "event: done" in body and plain["text"] and '"version":' in body
    cut = plain["text"][len(plain["text"]) // 2 :][:2] or plain["text"]
    stopped = client.post(
        "/generate", json={"prompt": "The capital of", "max_new_tokens": 8, "stop": [cut]}
    ).json()
    assert stopped["finish_reason"] == "stop" and cut not in stopped["text"]


def test_redis_down_gives_503(tmp_path: Path, tiny_dir: Path):
    env = base_env(
        tmp_path / "data",
        tiny_dir,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        FACTPATCH_REDIS_TIMEOUT_S="0.3",
    )
    proc = Proc("api", env, tmp_path / "api.log").start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            for _ in range(300):
                try:
                    if c.get("/health/live").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                import time

                time.sleep(0.1)
            for method, path, body in (
                ("POST", "/edits", {"edits": [_edit()]}),
                ("GET", "/health/ready", None),
                ("POST", "/generate", {"prompt": "hi"}),
                ("GET", "/versions", None),
            ):
                r = c.request(method, path, json=body)
                assert r.status_code == 503, (path, r.text)
                assert int(r.headers["Retry-After"]) >= 1
                assert r.json()["error"]["type"] in ("not_ready", "redis_unavailable")
            assert c.get("/health/live").status_code == 200
    finally:
        proc.stop()
