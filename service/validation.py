"""All request validation against the configured bounds, each rule a named error type.

Token lengths are checked here, at POST time, with the served model's tokenizer, so a
job that reaches the queue can always be encoded by the worker.
"""

from __future__ import annotations

from typing import Any

from service.errors import ApiError
from service.schemas import EditIn, EditsRequest, GenerateRequest, ProtectedIn
from service.settings import Settings

MAX_IDEMPOTENCY_KEY_CHARS = 200


def _text(value: str, what: str, limit: int) -> None:
    if not value.strip():
        raise ApiError("empty_text", f"{what} is empty")
    if len(value) > limit:
        raise ApiError("text_too_long", f"{what} has {len(value)} characters; the limit is {limit}")


def validate_edits(
    body: EditsRequest,
    s: Settings,
    tokenizer: Any,
    protected: set[str] | frozenset[str] = frozenset(),
) -> None:
    """`protected`: the normalised forms of the body's prompts that are protected."""
    from editor_core.encoding import EmptyEditError, subject_span, tokenize_pair
    from editor_core.joint import normalise_prompt

    n = len(body.edits)
    if n == 0 or n > s.max_edits_per_request:
        raise ApiError(
            "too_many_edits", f"{n} edits; send 1..{s.max_edits_per_request} per request"
        )
    targets: dict[str, str] = {}
    for i, e in enumerate(body.edits):
        _text(e.prompt, f"edits[{i}].prompt", s.max_prompt_chars)
        _text(e.target, f"edits[{i}].target", s.max_target_chars)
        if e.subject is not None:
            _text(e.subject.strip(), f"edits[{i}].subject", s.max_prompt_chars)
            if subject_span(e.prompt, e.subject) is None:
                raise ApiError(
                    "subject_not_in_prompt",
                    f"edits[{i}]: subject {e.subject[:60]!r} does not occur in the prompt",
                )
        for j, p in enumerate(e.paraphrases or []):
            _text(p, f"edits[{i}].paraphrases[{j}]", s.max_prompt_chars)
            _not_protected(p, f"edits[{i}].paraphrases[{j}]", protected)
        _validate_keep(i, e, s)
        key = normalise_prompt(e.prompt)
        if key in targets and targets[key] != e.target.strip():
            raise ApiError(
                "conflicting_targets",
                f"edits[{i}]: prompt {e.prompt[:60]!r} appears with two different targets",
            )
        targets[key] = e.target.strip()
        _not_protected(e.prompt, f"edits[{i}]: prompt", protected)
        try:
            p_ids, t_ids = tokenize_pair(tokenizer, e.prompt, e.target)
        except EmptyEditError as exc:
            raise ApiError("empty_text", f"edits[{i}]: {exc}") from exc
        if len(p_ids) + len(t_ids) > s.max_edit_tokens:
            raise ApiError(
                "too_many_tokens",
                f"edits[{i}]: prompt + target is {len(p_ids) + len(t_ids)} tokens; the limit is "
                f"{s.max_edit_tokens}",
            )


def validate_protected(body: ProtectedIn, s: Settings, tokenizer: Any) -> None:
    from editor_core.encoding import normalise_prompt

    n = len(body.prompts)
    if n > s.max_protected:
        raise ApiError("too_many_prompts", f"{n} prompts; the list holds at most {s.max_protected}")
    answers: dict[str, str | None] = {}
    for i, p in enumerate(body.prompts):
        _text(p.prompt, f"prompts[{i}].prompt", s.max_prompt_chars)
        if p.answer is not None:
            _text(p.answer, f"prompts[{i}].answer", s.max_target_chars)
        key = normalise_prompt(p.prompt)
        answer = p.answer.strip() if p.answer is not None else None
        if key in answers and answers[key] != answer:
            raise ApiError(
                "conflicting_answers",
                f"prompts[{i}]: prompt {p.prompt[:60]!r} appears with two different answers",
            )
        answers[key] = answer
        n_tokens = _held_tokens(tokenizer, p.prompt, p.answer)
        if n_tokens > s.max_edit_tokens:
            raise ApiError(
                "too_many_tokens",
                f"prompts[{i}]: prompt + answer is {n_tokens} tokens; the limit is "
                f"{s.max_edit_tokens}",
            )


def _not_protected(text: str, where: str, protected: set[str] | frozenset[str]) -> None:
    """409 `prompt_is_protected` when `text` (an edit's prompt or paraphrase) is on the
    protected list: every version holds its answer, which the edit would change."""
    from editor_core.joint import normalise_prompt

    if normalise_prompt(text) in protected:
        raise ApiError(
            "prompt_is_protected",
            f"{where} {text[:60]!r} is a protected prompt (GET /protected): every version "
            "holds its answer; take it off the list (DELETE /protected) to edit it",
        )


def _held_tokens(tokenizer: Any, prompt: str, answer: str | None) -> int:
    """Tokens a protected prompt is held at: prompt + answer as an edit is tokenised, or
    the prompt + the model's own continuation (`protect.GREEDY_TOKENS`)."""
    from editor_core.encoding import tokenize_pair
    from editor_core.protect import GREEDY_TOKENS

    if answer:
        return sum(map(len, tokenize_pair(tokenizer, prompt, answer)))
    return len(tokenizer(prompt)["input_ids"]) + GREEDY_TOKENS


def _validate_keep(i: int, e: EditIn, s: Settings) -> None:
    """Keep prompts hold the subject's other facts: each must name the subject (the δ that
    carries the edit sits at the subject's tokens) and none may be the edit's own prompt."""
    from editor_core.encoding import subject_span
    from editor_core.joint import normalise_prompt

    if not e.keep:
        return
    if e.subject is None or not e.subject.strip():
        raise ApiError(
            "keep_without_subject", f"edits[{i}]: keep prompts need the edit's `subject`"
        )
    for j, p in enumerate(e.keep):
        _text(p, f"edits[{i}].keep[{j}]", s.max_prompt_chars)
        if subject_span(p, e.subject) is None:
            raise ApiError(
                "subject_not_in_keep_prompt",
                f"edits[{i}].keep[{j}]: subject {e.subject[:60]!r} does not occur in {p[:60]!r}",
            )
        if normalise_prompt(p) == normalise_prompt(e.prompt):
            raise ApiError(
                "keep_prompt_is_edited",
                f"edits[{i}].keep[{j}] is the edit's own prompt: it cannot be kept and changed",
            )


def validate_generate(body: GenerateRequest, s: Settings) -> int:
    """The effective max_new_tokens."""
    _text(body.prompt, "prompt", s.max_prompt_chars)
    n = body.max_new_tokens or min(s.default_max_new_tokens, s.max_new_tokens_cap)
    if n > s.max_new_tokens_cap:
        raise ApiError(
            "max_new_tokens_too_large", f"max_new_tokens {n} > cap {s.max_new_tokens_cap}"
        )
    stops = body.stop or []
    if len(stops) > s.max_stop_sequences or any(
        not x or len(x) > s.max_target_chars for x in stops
    ):
        raise ApiError(
            "too_many_stop_sequences",
            f"send at most {s.max_stop_sequences} non-empty stop strings of ≤ {s.max_target_chars} chars",
        )
    return n


def validate_prompt_tokens(n_tokens: int, s: Settings) -> None:
    if n_tokens > s.max_generate_prompt_tokens:
        raise ApiError(
            "too_many_tokens",
            f"prompt is {n_tokens} tokens; the limit is {s.max_generate_prompt_tokens}",
        )


def validate_idempotency_key(key: str | None) -> None:
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isprintable()):
        raise ApiError(
            "bad_idempotency_key",
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_CHARS} printable chars",
        )
