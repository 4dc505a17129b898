"""How often an N-fact draw's neighbourhood prompts name a subject that ends in the same
token as some edited subject.

malmen-opt keys every edit at its subject's last token.  In the lowest edited layers that
key is mostly the token itself, so an edit of "Calderon College" also reaches "Alwina
College".  This counts, for the draws `factpatch eval` and `scripts/mu_sweep.py` make
(same seed rule), the share of the drawn facts' neighbourhood prompts whose subject shares
that token with an edited subject, and the share of edited subjects that share it with
another edited subject.  Tokenizer only: seconds.

    python scripts/last_token_overlap.py --facts data/facts/val.jsonl data/facts/test.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from editor_core.data import read_facts
from editor_core.encoding import subject_last_token
from editor_core.evaluate import last_token_sharing, sample_facts
from editor_core.loading import resolve_model_dir


def overlap(tokenizer: Any, facts: list[Any]) -> dict[str, float]:
    """{"neighbours": share of the facts' neighbourhood prompts whose subject ends in an
    edited subject's last token, "edits": share of facts whose subject's last token another
    edited subject also ends in, "n_neighbours": how many neighbourhood prompts}."""
    edits, neighbours = last_token_sharing(tokenizer, facts)
    return {
        "neighbours": sum(neighbours.values()) / len(neighbours) if neighbours else 0.0,
        "edits": sum(edits) / len(facts),
        "n_neighbours": float(len(neighbours)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", type=Path, nargs="+", required=True)
    p.add_argument("--n", default="16,64,256,512,1024")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    args = p.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(args.model, args.data_dir))
    print(
        "| facts | N | neighbourhood prompts | sharing an edited subject's last token "
        "| edits sharing theirs with another edit |"
    )
    print("|---|---|---|---|---|")
    for path in args.facts:
        facts = read_facts(path)
        subjects = {f.subject for f in facts if f.subject}
        tokens = {subject_last_token(tokenizer, s) for s in subjects}
        for n in [int(x) for x in args.n.split(",") if x.strip()]:
            chosen = sample_facts(facts, n, args.seed)
            if chosen is None:
                continue
            o = overlap(tokenizer, chosen)
            print(
                f"| {path.name} | {n} | {o['n_neighbours']:.0f} | {o['neighbours']:.2f} "
                f"| {o['edits']:.2f} |"
            )
        print(f"<!-- {path.name}: {len(subjects)} subjects, {len(tokens)} distinct last tokens -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
