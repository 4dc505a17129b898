"""Loaders for the public editing benchmarks, into native `Fact`s.

- zsRE as distributed with MEND / MALMEN: a JSON list of records with `src` (question),
  `alt` (the new answer; `answers[0]` when absent), `answers` (gold), `rephrase`,
  `loc` ("nq question: ...") and `loc_ans`.
- CounterFact as distributed with ROME: a JSON list of records with `case_id`,
  `requested_rewrite` {`prompt` (a template with "{}"), `subject`, `target_new` {"str"},
  `target_true` {"str"}, `relation_id`}, `paraphrase_prompts`, `neighborhood_prompts`
  (same relation, other subjects: their answer is `target_true`), `generation_prompts`.

Both also accept JSONL (one record a line).  A malformed record raises `FactFormatError`
naming the file and record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from editor_core.data.formats import Fact, FactFormatError, LocalityPrompt


def _records(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return [(f"{path}:record {i}", r) for i, r in enumerate(data)]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise FactFormatError(f"{path}:{n}", f"invalid JSON ({exc.msg})") from exc
    return out


def _str(rec: Any, key: str, where: str) -> str:
    value = rec.get(key) if isinstance(rec, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise FactFormatError(where, f"missing or empty string field {key!r}")
    return value


def load_zsre(path: str | Path, limit: int | None = None) -> list[Fact]:
    """zsRE (MEND release) → facts with one paraphrase and one ordinary locality prompt."""
    path = Path(path)
    facts: list[Fact] = []
    for i, (where, rec) in enumerate(_records(path)[:limit]):
        src = _str(rec, "src", where)
        answers = rec.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise FactFormatError(where, "'answers' must be a list of strings")
        alt = rec.get("alt")
        if isinstance(alt, str) and alt.strip():
            target, true = alt.strip(), (answers[0].strip() if answers else None)
        elif answers:
            target, true = answers[0].strip(), None
        else:
            raise FactFormatError(where, "neither 'alt' nor 'answers' gives a target")
        rephrase = rec.get("rephrase")
        paraphrases = (rephrase,) if isinstance(rephrase, str) and rephrase.strip() else ()
        locality: tuple[LocalityPrompt, ...] = ()
        if isinstance(rec.get("loc"), str) and rec["loc"].strip():
            loc_ans = rec.get("loc_ans")
            answer = loc_ans.strip() if isinstance(loc_ans, str) and loc_ans.strip() else None
            locality = (LocalityPrompt(rec["loc"], answer),)
        facts.append(Fact(
            id=f"zsre-{rec.get('case_id', i)}",
            prompt=src,
            target=target,
            paraphrases=paraphrases,
            subject=str(rec.get("subject", "")),
            relation="zsre",
            true_answer=true,
            locality=locality,
        ))
    return facts


def load_counterfact(path: str | Path, limit: int | None = None) -> list[Fact]:
    """CounterFact (ROME release) → facts with paraphrases and neighbourhood prompts."""
    path = Path(path)
    facts: list[Fact] = []
    for where, rec in _records(path)[:limit]:
        rw = rec.get("requested_rewrite") if isinstance(rec, dict) else None
        if not isinstance(rw, dict):
            raise FactFormatError(where, "missing object 'requested_rewrite'")
        template = _str(rw, "prompt", where)
        subject = _str(rw, "subject", where)
        if "{}" not in template:
            raise FactFormatError(where, "requested_rewrite.prompt has no '{}' for the subject")
        new, true = rw.get("target_new"), rw.get("target_true")
        if not isinstance(new, dict) or not isinstance(true, dict):
            raise FactFormatError(where, "target_new / target_true must be objects with 'str'")
        target = _str(new, "str", where).strip()
        true_str = _str(true, "str", where).strip()
        para = [p for p in rec.get("paraphrase_prompts", []) if isinstance(p, str) and p.strip()]
        neigh = [p for p in rec.get("neighborhood_prompts", []) if isinstance(p, str) and p.strip()]
        facts.append(Fact(
            id=f"cf-{rec.get('case_id', len(facts))}",
            prompt=template.format(subject),
            target=target,
            paraphrases=tuple(para),
            subject=subject,
            relation=str(rw.get("relation_id", "")),
            true_answer=true_str,
            neighborhood=tuple(LocalityPrompt(p, true_str) for p in neigh),
        ))
    return facts
