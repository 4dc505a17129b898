"""GET /versions, GET /versions/{v}, POST /versions/{v}/rollback."""

from __future__ import annotations

from fastapi import APIRouter

from service.errors import ApiError
from service.routes.deps import MetricsDep, SharedDep
from service.schemas import RollbackOut, VersionDetail, VersionEdit, VersionOut, VersionsOut
from service.security import Admin, Reader
from service.versions import Manifest, VersionCorruptError, VersionNotFoundError

router = APIRouter(tags=["versions"])


def _out(m: Manifest, current: int) -> dict[str, object]:
    return {
        "version": m.version,
        "parent": m.parent,
        "created": m.created,
        "mode": m.mode,
        "current": m.version == current,
        "edit_ids": m.edit_ids,
        "live_edit_ids": m.live_edit_ids,
        "withdrawn_edit_ids": m.withdrawn_edit_ids,
        "job_ids": m.job_ids,
        "editor_sha256": m.editor_sha256,
        "base_model_sha256": m.base_model_sha256,
        "metrics": m.metrics,
    }


def _manifest(shared: SharedDep, version: int) -> Manifest:
    if version not in shared.store.committed():
        raise ApiError("version_not_found", f"no version {version}")
    try:
        return shared.store.manifest(version)
    except VersionNotFoundError as exc:
        raise ApiError("version_not_found", f"version {version} has no files") from exc
    except VersionCorruptError as exc:
        raise ApiError("version_corrupt", str(exc)) from exc


@router.get("/versions", response_model=VersionsOut)
def list_versions(_who: Reader, shared: SharedDep) -> VersionsOut:
    """Every committed version, oldest first, and which one is current."""
    current = shared.store.current()
    out = []
    for v in shared.store.committed():
        try:
            out.append(VersionOut(**_out(shared.store.manifest(v), current)))  # type: ignore[arg-type]
        except (VersionNotFoundError, VersionCorruptError):
            continue  # listed by Redis but unreadable on disk: not offered
    return VersionsOut(current=current, versions=out)


@router.get("/versions/{version}", response_model=VersionDetail)
def get_version(version: int, _who: Reader, shared: SharedDep) -> VersionDetail:
    """One version with its metrics and the edits it added, as they were sent (prompt,
    target, subject, keep prompts, paraphrases)."""
    m = _manifest(shared, version)
    edits = []
    for edit_id in m.edit_ids:
        rec = shared.queue.edit(edit_id) or {}
        edits.append(
            VersionEdit(
                edit_id=edit_id,
                **{f: rec.get(f, "") for f in ("prompt", "target", "subject")},
                **{f: rec.get(f, []) for f in ("keep", "paraphrases")},
            )
        )
    return VersionDetail(**_out(m, shared.store.current()), edits=edits)  # type: ignore[arg-type]


@router.post("/versions/{version}/rollback", response_model=RollbackOut)
def rollback(version: int, _who: Admin, shared: SharedDep, metrics: MetricsDep) -> RollbackOut:
    """Make `version` current: instant, bit-exact (stored tensors), recorded as an event."""
    try:
        previous = shared.store.rollback(version)
    except VersionNotFoundError as exc:
        raise ApiError("version_not_found", f"no version {version}") from exc
    except VersionCorruptError as exc:
        raise ApiError("version_corrupt", str(exc)) from exc
    metrics.rollbacks.inc()
    return RollbackOut(current=version, previous=previous)
