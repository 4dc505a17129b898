"""Request and response bodies (separate classes; every string bounded).

The hard bounds here are only type sanity; the configured limits (edits per request,
characters, tokens, max_new_tokens) are checked in `validation.py` with named errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Static ceilings, far above any configured limit; the body-size limit bounds them too.
_TEXT_CEILING = 100_000
_LIST_CEILING = 100_000
MAX_KEEP_PROMPTS = 16

JobStatus = Literal["queued", "running", "applied", "failed"]
JobKind = Literal["add", "withdraw"]


class EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(max_length=_TEXT_CEILING, examples=["The capital of France is"])
    target: str = Field(max_length=_TEXT_CEILING, examples=["Rome"])
    subject: str | None = Field(
        default=None,
        max_length=_TEXT_CEILING,
        examples=["France"],
        description="the entity the fact is about, as written in the prompt.  An editor that "
        "keys edits on the subject (malmen-opt) finds it in the prompt and paraphrases when "
        "it is left out (the job's results name the one used); with it the hyper-network "
        "editor holds the same question about other subjects still (subject anchors)",
    )
    paraphrases: list[str] | None = Field(
        default=None,
        max_length=16,
        examples=[["France's capital city is"]],
        description="the fact in other words, stored with the edit.  The value-optimising "
        "editor optimises each edit for the first value_opt.paraphrase_max (shipped: 4) that "
        "contain `subject` too and keys it on them as well (value_opt.paraphrase_keys); the "
        "hyper-network editor edits the first paraphrase_rows (default 0) too.  Two to four "
        "raise paraphrase accuracy most",
    )
    keep: list[str] | None = Field(
        default=None,
        max_length=MAX_KEEP_PROMPTS,
        examples=[["The official language of France is"]],
        description="prompts about the same subject whose answers must not change (its other "
        "facts); each must contain `subject`.  An editor that optimises values "
        "(value_opt.keep_weight > 0) holds their next token where the unedited model had it; "
        "others store them only",
    )


class EditsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"edits": [{"prompt": "The capital of France is", "target": "Rome"}]}]
        },
    )
    edits: list[EditIn] = Field(max_length=_LIST_CEILING)


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus
    edit_ids: list[str]


class EditResult(BaseModel):
    edit_id: str
    prompt: str
    target: str
    generated: str
    success: bool
    subject: str | None = Field(
        default=None,
        description="the subject the edit was keyed on: as sent or, for an editor that keys "
        "edits on the subject (malmen-opt), found in the prompt and paraphrases when none was "
        "sent; null when there was none",
    )


class ProtectedCheck(BaseModel):
    checked: int = Field(description="protected prompts scored on the job's version")
    kept: int = Field(description="of them, those whose answer is the unedited model's")
    changed: list[str] = Field(description="the first changed prompts (at most 20)")


class JobOut(BaseModel):
    job_id: str
    kind: JobKind
    status: JobStatus
    version: int | None = None
    edit_ids: list[str]
    results: list[EditResult] = Field(default_factory=list)
    verified: bool = Field(
        default=False,
        description="the worker has checked the job's edits on the new weights and stored "
        "`results` (right after the commit, so an applied job may briefly show none)",
    )
    protected: ProtectedCheck | None = Field(
        default=None,
        description="with FACTPATCH_PROTECT: the protected prompts checked on this job's "
        "version (null without protected prompts, or before `verified`)",
    )
    error: str | None = None
    created: float
    updated: float


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prompt": "The capital of France is", "max_new_tokens": 8, "temperature": 0}
            ]
        },
    )
    prompt: str = Field(max_length=_TEXT_CEILING)
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: configured value")
    temperature: float = Field(default=0.0, ge=0.0, le=10.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=64)
    version: int | None = Field(default=None, ge=0, description="pin a version; default current")
    stream: bool = Field(
        default=False, description="server-sent events: `token` events, then `done`"
    )
    seed: int | None = Field(default=None, ge=0, description="sampling seed (temperature > 0)")


FinishReason = Literal["stop", "length"]


class GenerateResponse(BaseModel):
    text: str
    version: int
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class VersionOut(BaseModel):
    version: int
    parent: int | None
    created: float
    mode: str
    current: bool
    edit_ids: list[str]
    live_edit_ids: list[str]
    withdrawn_edit_ids: list[str]
    job_ids: list[str]
    editor_sha256: str | None
    base_model_sha256: str
    metrics: dict[str, Any]


class VersionEdit(BaseModel):
    edit_id: str
    prompt: str
    target: str
    subject: str = Field(description="'' when the edit named none")
    keep: list[str] = Field(default_factory=list, description="keep prompts sent with it")
    paraphrases: list[str] = Field(default_factory=list, description="paraphrases sent with it")


class VersionDetail(VersionOut):
    edits: list[VersionEdit] = Field(
        default_factory=list, description="the edits this version added, as they were sent"
    )


class VersionsOut(BaseModel):
    current: int
    versions: list[VersionOut]


class RollbackOut(BaseModel):
    current: int
    previous: int


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    version: int | None = None
    detail: str | None = None


class ProtectedPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(max_length=_TEXT_CEILING, examples=["The capital of Italy is"])
    answer: str | None = Field(
        default=None,
        max_length=_TEXT_CEILING,
        examples=["Rome"],
        description="the answer to hold; without one, the unedited model's own first "
        "tokens are held",
    )


class ProtectedIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompts": [{"prompt": "The capital of Italy is"}]}]},
    )
    prompts: list[ProtectedPrompt] = Field(max_length=_LIST_CEILING)


class ProtectedRemove(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"prompts": ["The capital of Italy is"]}]}
    )
    prompts: list[str] = Field(max_length=_LIST_CEILING, description="prompts to take off")


class ProtectedOut(BaseModel):
    count: int = Field(description="prompts on the list")
    revision: int = Field(description="increments with every change of the list")
    held_revision: int | None = Field(
        description="the revision the worker has read and holds in its solves (a change is "
        "in effect once this reaches `revision`); null before a worker has read the list"
    )
    offset: int
    prompts: list[ProtectedPrompt] = Field(description="in normalised-prompt order")


class ProtectedChange(BaseModel):
    changed: int = Field(description="prompts added (POST), on the list (PUT) or removed (DELETE)")
    count: int = Field(description="prompts on the list now")
    revision: int = Field(description="the list's revision now; versions record the one held")
    not_found: list[str] = Field(
        default_factory=list, description="DELETE: the asked prompts that were not on the list"
    )
