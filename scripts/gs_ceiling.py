"""How much GS can an edit of this model reach?  Two ceilings, no editing involved.

GS (MALMEN.md §4) is the target's teacher-forced token accuracy on paraphrases of the edit
prompt.  Every editor measured here stays at GS 0.3–0.4 while ES is 0.9–1.0, fine-tuning
included.  This script asks what the unedited model itself does with paraphrases:

- **known**: on facts it already knows (the real-world set's true answers), the model's
  token accuracy on the edit prompt and on the paraphrases, and on the paraphrases of the
  facts whose edit prompt it gets fully right.  A fact stored in the weights does not
  carry over to the paraphrases more than this.
- **in context**: the fact stated just before the paraphrase ("<prompt> <target>.\\n
  <paraphrase>"), token accuracy of the (counterfactual) target: how well the model answers
  the paraphrase when it is told the new fact outright.  Also the edit prompt itself in the
  same form (a copy task).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/gs_ceiling.py \\
        --facts data/facts/test.jsonl --n 512 --out out/gs_ceiling.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from editor_core import EditRequest
from editor_core.config import ModelSpec
from editor_core.data import Fact, read_facts, realworld_facts
from editor_core.evaluate import sample_facts
from editor_core.loading import load_model
from editor_core.metrics import token_accuracy


def in_context(fact: Fact, prompt: str) -> str:
    return f"{fact.prompt} {fact.target}.\n{prompt}"


def ceilings(loaded: Any, facts: Sequence[Fact], known: bool) -> dict[str, Any]:
    """`known`: the facts' true answers are real knowledge (not the generator's fictions)."""
    model, tok = loaded.model, loaded.tokenizer
    para = [(f, p) for f in facts for p in f.paraphrases]
    out: dict[str, Any] = {"n_facts": len(facts), "n_paraphrases": len(para)}
    ctx_es = token_accuracy(
        model, tok, [EditRequest(in_context(f, f.prompt), f.target) for f in facts]
    )
    ctx_gs = token_accuracy(model, tok, [EditRequest(in_context(f, p), f.target) for f, p in para])
    out["in_context_es"] = mean(ctx_es)
    out["in_context_gs"] = mean(ctx_gs)
    truly = [f for f in facts if f.true_answer] if known else []
    if truly:
        kp = [(f, p) for f in truly for p in f.paraphrases]
        es = token_accuracy(model, tok, [EditRequest(f.prompt, f.true_answer or "") for f in truly])
        gs = token_accuracy(model, tok, [EditRequest(p, f.true_answer or "") for f, p in kp])
        sure = {f.id for f, a in zip(truly, es, strict=True) if a == 1.0}
        gs_sure = [a for (f, _), a in zip(kp, gs, strict=True) if f.id in sure]
        out |= {
            "known_es": mean(es),
            "known_gs": mean(gs),
            "known_n_fully_right": len(sure),
            "known_gs_given_es_1": mean(gs_sure) if gs_sure else None,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--facts", type=Path, help="generated facts (JSONL); the real-world set always")
    p.add_argument("--n", type=int, default=512, help="facts sampled from --facts (seed 0)")
    p.add_argument("--out", type=Path, default=Path("out/gs_ceiling.json"))
    args = p.parse_args()
    loaded = load_model(ModelSpec(source=args.model), args.data_dir)
    results = {"realworld": ceilings(loaded, realworld_facts(), known=True)}
    if args.facts:
        facts = read_facts(args.facts)
        results["facts"] = ceilings(
            loaded, sample_facts(facts, min(args.n, len(facts)), 0) or [], known=False
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
