"""The native data format: JSONL facts and JSONL locality prompts.

A fact file has one JSON object a line:

    {"prompt": "The Eiffel Tower is located in the city of", "target": "Rome",
     "paraphrases": ["The city that is home to the Eiffel Tower is"],
     "id": "...", "subject": "Eiffel Tower", "relation": "location_city",
     "locality": [{"prompt": "...", "answer": "..."}],
     "neighborhood": [{"prompt": "...", "answer": "..."}]}

Only `prompt` and `target` are required; unknown fields are ignored.  Prompts end right
before the answer and targets carry no leading space (tokenisation adds it, see
`editor_core.encoding`).  A locality file has `{"prompt": ..., "answer": ...}` lines with
`answer` optional.  A bad line raises `FactFormatError` naming `path:line`; nothing is
skipped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bounds on what one line may hold: checked once, here.
MAX_TEXT_CHARS = 2000
MAX_LIST_ITEMS = 64


def is_question(prompt: str) -> bool:
    """Whether a prompt is in the question form the generator and the real-world set write
    ("Q: Which sport is X known for? A:"); GS is reported per form."""
    return prompt.startswith("Q:")


def neighbour_subject(fact: Fact, neighbour_prompt: str) -> str | None:
    """The subject of one of `fact`'s neighbourhood prompts: what stands where the fact's
    subject stands in the fact's own prompt ("Tara Oliver" in "Tara Oliver was honoured
    with the" for a fact "Błażej Oscuro was honoured with the"); None when the neighbour is
    not written in that template or the fact names no subject found in its prompt."""
    if not fact.subject or fact.subject not in fact.prompt:
        return None
    before, after = fact.prompt.split(fact.subject, 1)
    if not (neighbour_prompt.startswith(before) and neighbour_prompt.endswith(after)):
        return None
    return neighbour_prompt[len(before) : len(neighbour_prompt) - len(after)].strip() or None


class FactFormatError(ValueError):
    """A line of a data file is not a valid fact or locality prompt."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class LocalityPrompt:
    """An unrelated prompt whose behaviour an edit must not change.

    answer: the gold continuation when known (for LS-gold); None for free text, where
        locality is measured on the unedited model's own greedy continuation.
    """

    prompt: str
    answer: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt}
        if self.answer is not None:
            out["answer"] = self.answer
        return out


@dataclass(frozen=True)
class Fact:
    """One fact correction with what is needed to evaluate it."""

    id: str
    prompt: str
    target: str
    paraphrases: tuple[str, ...] = ()
    subject: str = ""
    relation: str = ""
    true_answer: str | None = None  # the value before the edit, when known
    locality: tuple[LocalityPrompt, ...] = ()
    neighborhood: tuple[LocalityPrompt, ...] = ()  # same relation, another subject
    # prompts about the same subject that name another of its facts, which the edit must
    # leave alone (EditRequest.keep; used with value_opt.keep_weight > 0)
    keep: tuple[str, ...] = ()
    # the fact in other words, sent with the edit (EditRequest.paraphrases; used with
    # value_opt.paraphrase_max > 0); never scored — GS is measured on `paraphrases`
    edit_paraphrases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "target": self.target,
            "paraphrases": list(self.paraphrases),
            "subject": self.subject,
            "relation": self.relation,
        }
        if self.true_answer is not None:
            out["true_answer"] = self.true_answer
        if self.locality:
            out["locality"] = [p.to_json() for p in self.locality]
        if self.neighborhood:
            out["neighborhood"] = [p.to_json() for p in self.neighborhood]
        if self.keep:
            out["keep"] = list(self.keep)
        if self.edit_paraphrases:
            out["edit_paraphrases"] = list(self.edit_paraphrases)
        return out


# -- validation -------------------------------------------------------------------------
def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise FactFormatError(where, f"missing required field {key!r}")
        return None
    if not isinstance(value, str):
        raise FactFormatError(where, f"field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise FactFormatError(where, f"field {key!r} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise FactFormatError(where, f"field {key!r} is over {MAX_TEXT_CHARS} characters")
    return value


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise FactFormatError(where, f"field {key!r} must be a list, got {type(value).__name__}")
    if len(value) > MAX_LIST_ITEMS:
        raise FactFormatError(where, f"field {key!r} has over {MAX_LIST_ITEMS} items")
    return value


def _strings(obj: dict[str, Any], key: str, where: str) -> list[str]:
    items = _list(obj, key, where)
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise FactFormatError(where, f"{key}[{i}] must be a non-empty string")
        if len(p) > MAX_TEXT_CHARS:
            raise FactFormatError(where, f"{key}[{i}] is over {MAX_TEXT_CHARS} characters")
    return items


def parse_locality(obj: Any, where: str) -> LocalityPrompt:
    if not isinstance(obj, dict):
        raise FactFormatError(where, "a locality prompt must be an object with 'prompt'")
    prompt = _text(obj, "prompt", where)
    answer = _text(obj, "answer", where, required=False)
    assert prompt is not None
    if answer is not None and not answer.strip():
        answer = None
    return LocalityPrompt(prompt=prompt, answer=answer)


def parse_fact(obj: Any, where: str, default_id: str) -> Fact:
    if not isinstance(obj, dict):
        raise FactFormatError(where, "a fact must be a JSON object")
    prompt = _text(obj, "prompt", where)
    target = _text(obj, "target", where)
    assert prompt is not None and target is not None
    if target != target.strip():
        raise FactFormatError(where, "target has leading or trailing whitespace")
    paraphrases = _strings(obj, "paraphrases", where)
    keep = _strings(obj, "keep", where)
    edit_paraphrases = _strings(obj, "edit_paraphrases", where)
    raw_id = obj.get("id", default_id)
    return Fact(
        id=str(raw_id),
        prompt=prompt,
        target=target,
        paraphrases=tuple(paraphrases),
        subject=_text(obj, "subject", where, required=False) or "",
        relation=_text(obj, "relation", where, required=False) or "",
        true_answer=_text(obj, "true_answer", where, required=False),
        locality=tuple(
            parse_locality(p, f"{where} locality[{i}]")
            for i, p in enumerate(_list(obj, "locality", where))
        ),
        neighborhood=tuple(
            parse_locality(p, f"{where} neighborhood[{i}]")
            for i, p in enumerate(_list(obj, "neighborhood", where))
        ),
        keep=tuple(keep),
        edit_paraphrases=tuple(edit_paraphrases),
    )


# -- files ------------------------------------------------------------------------------
def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(path:line, parsed object) for every non-blank line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise FactFormatError(where, f"invalid JSON ({exc.msg})") from exc


def read_facts(path: str | Path) -> list[Fact]:
    """All facts of a native JSONL file; ids default to `<file stem>-<line>`."""
    path = Path(path)
    facts = [
        parse_fact(obj, where, f"{path.stem}-{where.rsplit(':', 1)[1]}")
        for where, obj in _json_lines(path)
    ]
    seen: dict[str, int] = {}
    for i, fact in enumerate(facts):
        if fact.id in seen:
            raise FactFormatError(str(path), f"duplicate id {fact.id!r}")
        seen[fact.id] = i
    return facts


def read_locality(path: str | Path) -> list[LocalityPrompt]:
    return [parse_locality(obj, where) for where, obj in _json_lines(Path(path))]


def _write_lines(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_facts(path: str | Path, facts: Iterable[Fact]) -> None:
    _write_lines(Path(path), (f.to_json() for f in facts))


def write_locality(path: str | Path, prompts: Iterable[LocalityPrompt]) -> None:
    _write_lines(Path(path), (p.to_json() for p in prompts))
