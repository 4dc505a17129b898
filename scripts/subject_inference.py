"""How often `editor_core.subjects.infer_subject` finds the token a subject-keyed edit is
read at, on facts whose subject is known.

A subject-keyed editor reads an edit at its subject's last token in the prompt and in each
paraphrase sent (`encoding.subject_token_indices`), and optimises one residual change per
subject (`value_opt.group_subjects`), so what counts is whether the inferred subject ends at
the same token as the true one everywhere, and whether it groups the same facts; where
both hold, the edit is the one its true subject gives.  An exact match is reported too.
Each fact is inferred from its prompt alone and from its prompt with the paraphrases a
client would send (the fact's `edit_paraphrases`, else its `paraphrases`, at most
`--paraphrases`).  Tokenizer only: seconds.

    python scripts/subject_inference.py --facts data/facts/val.jsonl --realworld
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from editor_core.data import read_facts, realworld_facts
from editor_core.data.formats import Fact
from editor_core.encoding import subject_token_indices
from editor_core.loading import resolve_model_dir
from editor_core.subjects import infer_subject


def _keyed(tokenizer: Any, text: str, subject: str | None) -> list[int]:
    return subject_token_indices(tokenizer, text, subject)[-1:] if subject else []


def score(tokenizer: Any, facts: list[Fact], n_paraphrases: int) -> dict[str, Any]:
    """Shares of `facts` with `n_paraphrases` paraphrases sent (0: the prompt alone):
    "token" the inferred subject is read at the true subject's token in the prompt,
    "all_tokens" in the prompt and every paraphrase sent, "exact" it is the subject as
    written, "none" nothing was found, "grouping" the facts the edit shares its subject with
    (one residual change per subject) are the same; and up to five misses."""
    exact = token = all_tokens = none = 0
    misses: list[tuple[str, str, str | None]] = []
    inferred = []
    for f in facts:
        sent = (f.edit_paraphrases or f.paraphrases)[:n_paraphrases]
        got = infer_subject(f.prompt, sent)
        inferred.append(got)
        exact += got == f.subject
        none += got is None
        if _keyed(tokenizer, f.prompt, got) == _keyed(tokenizer, f.prompt, f.subject):
            token += 1
            all_tokens += all(
                _keyed(tokenizer, p, got) == _keyed(tokenizer, p, f.subject) for p in sent
            )
        elif len(misses) < 5:
            misses.append((f.prompt, f.subject, got))
    true_groups: dict[str, set[int]] = {}
    found_groups: dict[str | None, set[int]] = {}
    for i, (f, got) in enumerate(zip(facts, inferred, strict=True)):
        true_groups.setdefault(f.subject, set()).add(i)
        found_groups.setdefault(got, set()).add(i)
    grouping = sum(
        got is not None and true_groups[f.subject] == found_groups[got]
        for f, got in zip(facts, inferred, strict=True)
    )
    n = len(facts)
    return {
        "exact": exact / n,
        "token": token / n,
        "all_tokens": all_tokens / n,
        "grouping": grouping / n,
        "none": none / n,
        "n": n,
        "misses": misses,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", type=Path, nargs="*", default=[])
    p.add_argument("--realworld", action="store_true", help="the shipped real-world set too")
    p.add_argument("--paraphrases", type=int, default=4, help="most paraphrases sent")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    args = p.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(args.model, args.data_dir))
    sets = [(path.name, read_facts(path)) for path in args.facts]
    if args.realworld:
        sets.append(("real-world", realworld_facts()))
    print(
        "| facts | n | paraphrases sent (at most) | keyed token right | … and in every paraphrase "
        "| same subject group | exact subject | none found |"
    )
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for name, facts in sets:
        facts = [f for f in facts if f.subject]
        for k in (0, args.paraphrases):
            s = score(tokenizer, facts, k)
            print(
                f"| {name} | {s['n']} | {k} | {s['token']:.3f} | {s['all_tokens']:.3f} "
                f"| {s['grouping']:.3f} | {s['exact']:.3f} | {s['none']:.3f} |"
            )
            notes += [f"<!-- {name}, {k}: {m!r} -->" for m in s["misses"]]
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
