"""POST /edits, GET /edits/{job_id}, DELETE /edits/{edit_id}."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header

from service.errors import ApiError
from service.queue import IdempotencyConflictError, Job, QueueFullError, new_id
from service.routes.deps import EngineDep, MetricsDep, SettingsDep, SharedDep
from service.schemas import EditsRequest, JobAccepted, JobOut
from service.security import Editor, Reader
from service.validation import validate_edits, validate_idempotency_key

router = APIRouter(tags=["edits"])


def _enqueue(shared: SharedDep, job: Job, idempotency: tuple[str, str] | None, retry: int) -> str:
    try:
        job_id, _created = shared.queue.enqueue(job, idempotency)
    except QueueFullError as exc:
        raise ApiError("queue_full", str(exc), retry_after=retry) from exc
    except IdempotencyConflictError as exc:
        raise ApiError("idempotency_conflict", str(exc)) from exc
    return job_id


@router.post("/edits", status_code=202, response_model=JobAccepted)
def post_edits(
    body: EditsRequest,
    who: Editor,
    settings: SettingsDep,
    shared: SharedDep,
    engine: EngineDep,
    metrics: MetricsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobAccepted:
    """Queue 1..N fact corrections; a worker applies them as one new version."""
    validate_idempotency_key(idempotency_key)
    protected = shared.protected.which(
        p for e in body.edits for p in [e.prompt, *(e.paraphrases or [])]
    )
    validate_edits(body, settings, engine.tokenizer, protected)
    edits: list[dict[str, Any]] = [
        {"edit_id": new_id("e"), "prompt": e.prompt, "target": e.target, "subject": e.subject or ""}
        | ({"keep": e.keep} if e.keep else {})
        | ({"paraphrases": e.paraphrases} if e.paraphrases else {})
        for e in body.edits
    ]
    job = Job(new_id("job"), "add", edits, [e["edit_id"] for e in edits])
    idem = None
    if idempotency_key is not None:
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        idem = (f"{who.name}:{idempotency_key}", digest)
    job_id = _enqueue(shared, job, idem, settings.retry_after_s)
    if job_id == job.job_id:
        metrics.edits_enqueued.inc(len(edits))
        return JobAccepted(job_id=job_id, status="queued", edit_ids=job.edit_ids)
    first = shared.queue.job(job_id)
    if first is None:
        raise ApiError("job_not_found", f"job {job_id} of this Idempotency-Key has expired")
    return JobAccepted(job_id=job_id, status=first["status"], edit_ids=first["edit_ids"])


@router.get("/edits/{job_id}", response_model=JobOut)
def get_job(job_id: str, _who: Reader, shared: SharedDep) -> JobOut:
    """Job status (queued · running · applied · failed), its version, per-edit verification."""
    job = shared.queue.job(job_id[:100])
    if job is None:
        raise ApiError("job_not_found", f"no job {job_id[:100]!r}")
    return JobOut(**{k: v for k, v in job.items() if k != "edits"})


@router.delete("/edits/{edit_id}", status_code=202, response_model=JobAccepted)
def withdraw_edit(
    edit_id: str, _who: Editor, settings: SettingsDep, shared: SharedDep
) -> JobAccepted:
    """Withdraw one applied fact (joint mode): a new version without it."""
    if settings.edit_mode != "joint":
        raise ApiError("unsupported_in_mode", "withdrawing an edit needs FACTPATCH_EDIT_MODE=joint")
    if shared.queue.edit(edit_id[:100]) is None:
        raise ApiError("edit_not_found", f"no edit {edit_id[:100]!r}")
    current = shared.store.current()
    if edit_id not in shared.store.manifest(current).live_edit_ids:
        raise ApiError("edit_not_live", f"edit {edit_id} is not in force in version {current}")
    job = Job(new_id("job"), "withdraw", [{"edit_id": edit_id}], [edit_id])
    job_id = _enqueue(shared, job, None, settings.retry_after_s)
    return JobAccepted(job_id=job_id, status="queued", edit_ids=[edit_id])
