"""GET /protected, POST /protected (add), PUT /protected (replace), DELETE /protected (remove).

The deployment's protected prompts (`service.protected`): answers no edit may change.  A
change holds from the next version the worker solves; versions already written keep the
weights they have.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from editor_core.data.formats import LocalityPrompt
from editor_core.encoding import normalise_prompt
from service.errors import ApiError
from service.protected import Change, ListFullError
from service.routes.deps import EngineDep, SettingsDep, SharedDep
from service.schemas import (
    ProtectedChange,
    ProtectedIn,
    ProtectedOut,
    ProtectedPrompt,
    ProtectedRemove,
)
from service.security import Admin, Reader
from service.validation import validate_protected

router = APIRouter(tags=["protected"])
MAX_PAGE = 10_000


@router.get("/protected", response_model=ProtectedOut)
def list_protected(
    _who: Reader,
    shared: SharedDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> ProtectedOut:
    """The protected prompts, in normalised-prompt order, a page at a time."""
    rev, count, page = shared.protected.page(offset, limit)
    return ProtectedOut(
        count=count,
        revision=rev,
        held_revision=shared.protected.held_revision(),
        offset=offset,
        prompts=[ProtectedPrompt(prompt=p.prompt, answer=p.answer) for p in page],
    )


@router.post("/protected", response_model=ProtectedChange)
def add_protected(
    body: ProtectedIn, _who: Admin, settings: SettingsDep, shared: SharedDep, engine: EngineDep
) -> ProtectedChange:
    """Protect more prompts (a listed prompt sent again takes the answer sent now)."""
    prompts = _checked(body, settings, shared, engine)
    try:
        return _out(shared.protected.add(prompts, limit=settings.max_protected))
    except ListFullError as exc:
        raise ApiError("protected_list_full", f"{exc} (FACTPATCH_MAX_PROTECTED)") from exc


@router.put("/protected", response_model=ProtectedChange)
def replace_protected(
    body: ProtectedIn, _who: Admin, settings: SettingsDep, shared: SharedDep, engine: EngineDep
) -> ProtectedChange:
    """Make the list exactly these prompts (`{"prompts": []}` empties it)."""
    return _out(shared.protected.replace(_checked(body, settings, shared, engine)))


@router.delete("/protected", response_model=ProtectedChange)
def remove_protected(body: ProtectedRemove, _who: Admin, shared: SharedDep) -> ProtectedChange:
    """Take prompts off the list (matched as edits are: case, spacing and final punctuation
    ignored); the ones that were not on it come back in `not_found`."""
    change, missing = shared.protected.remove(body.prompts)
    return _out(change, missing)


def _checked(
    body: ProtectedIn, settings: SettingsDep, shared: SharedDep, engine: EngineDep
) -> list[LocalityPrompt]:
    """Validate the prompts and refuse any that a live edit changes (its prompt or one of
    its paraphrases): protecting it would undo the edit in the next version (withdraw the
    edit first)."""
    validate_protected(body, settings, engine.tokenizer)
    edited = _live_prompts(shared)
    for i, p in enumerate(body.prompts):
        if normalise_prompt(p.prompt) in edited:
            raise ApiError(
                "prompt_is_edited",
                f"prompts[{i}]: {p.prompt[:60]!r} is the prompt (or a paraphrase) of a live "
                "edit; withdraw the edit (DELETE /edits/{edit_id}) before protecting it",
            )
    return [
        LocalityPrompt(p.prompt.strip(), p.answer.strip() if p.answer else None)
        for p in body.prompts
    ]


def _live_prompts(shared: SharedDep) -> set[str]:
    """The normalised prompts and paraphrases of the current version's live edits."""
    live = shared.store.manifest(shared.store.current()).live_edit_ids
    return {normalise_prompt(p) for p in shared.queue.edit_prompts(live)}


def _out(change: Change, missing: list[str] | None = None) -> ProtectedChange:
    return ProtectedChange(
        changed=change.changed,
        count=change.count,
        revision=change.revision,
        not_found=missing or [],
    )
