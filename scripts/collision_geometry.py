"""Which layer's keys tell apart two subjects that end in the same token?

The value-optimising editor keys every edit at its subject's last token.  Neighbourhood
prompts whose subject ends in the same token as an edited subject ("Calderon College" /
"Alwina College") lose their answer far more often than the others (docs/val_optimise.md,
tenth session).  This measures, per layer, how a one-fact least-squares edit with a
preservation prior (`scripts/key_geometry.py`: w = (C + εI)⁻¹ u_e, response(x) = x·w / u_e·w,
the edit prompt gives 1) reaches, in the edit's own template:

- the fact's paraphrases (statement / question: want 1),
- the prompt with another subject that ENDS IN THE SAME TOKEN (want 0),
- the prompt with another subject that does not (want 0),

for keys read at the subject's last token (where malmen-opt keys by default) or, with
`--subject-token -2`, at the token before it (`value_opt.subject_tokens`: it has read the
subject's start but not its shared ending).  C = E[kkᵀ] over other facts' prompts and
neighbourhood prompts at the same subject token.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/collision_geometry.py --facts data/facts/val.jsonl \\
        --n 200 --out out/collision_geometry.json --plot docs/img/collision_geometry.png
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from key_geometry import _subject_prompts, geometry_parser, keys_at, load_default, one_fact_edits


def main() -> None:
    ap = geometry_parser(__doc__, 200, 600, "out/collision_geometry.json")
    ap.add_argument(
        "--subject-token",
        type=int,
        default=-1,
        help="-1 the subject's last token, -2 the one before",
    )
    args = ap.parse_args()

    from tqdm import tqdm

    from editor_core.data.formats import is_question
    from editor_core.encoding import subject_last_token

    model, tok, layers, facts = load_default(args)
    facts = [f for f in facts if f.get("subject") and f["subject"] in f["prompt"]]
    rng = random.Random(0)
    rng.shuffle(facts)
    by_last: dict[int, list[str]] = {}
    for s in sorted({f["subject"] for f in facts}):
        by_last.setdefault(subject_last_token(tok, s), []).append(s)
    subjects = sorted({f["subject"] for f in facts})

    chosen, pairs = [], []  # pairs: (shared-token subject, other-token subject)
    for f in facts:
        last = subject_last_token(tok, f["subject"])
        same = [s for s in by_last[last] if s != f["subject"]]
        if not same:
            continue
        other = rng.choice([s for s in subjects if subject_last_token(tok, s) != last])
        chosen.append(f)
        pairs.append((rng.choice(same), other))
        if len(chosen) == args.n:
            break
    pool = [f for f in facts if f not in chosen]
    ordinary = [(p, s) for p, s in _subject_prompts(pool) if s in p][: args.ordinary]
    print(f"{len(chosen)} facts with a same-last-token subject; {len(ordinary)} prompts for C")

    def paraphrase(f: dict, question: bool) -> tuple[str, str]:
        """The fact's first statement (or question) paraphrase naming the subject, else its
        prompt."""
        subject = f["subject"]
        hits = [p for p in f["paraphrases"] if is_question(p) == question and subject in p]
        return (hits[0] if hits else f["prompt"], subject)

    def swapped(f: dict, other: str) -> tuple[str, str]:
        return (f["prompt"].replace(f["subject"], other), other)

    texts = {
        "edit": [(f["prompt"], f["subject"]) for f in chosen],
        "statement": [paraphrase(f, False) for f in chosen],
        "question": [paraphrase(f, True) for f in chosen],
        "shared": [swapped(f, a) for f, (a, _) in zip(chosen, pairs, strict=True)],
        "own": [swapped(f, b) for f, (_, b) in zip(chosen, pairs, strict=True)],
        "ordinary": ordinary,
    }
    has_q = torch.tensor(
        [q != f["prompt"] for (q, _), f in zip(texts["question"], chosen, strict=True)]
    )
    k = {
        name: keys_at(
            model,
            tok,
            layers,
            tqdm(at_subject(tok, items, args.subject_token), desc=f"{name} keys"),
        )
        for name, items in texts.items()
    }
    rows: dict[str, list[float]] = {n: [] for n in LINES}
    for layer in range(len(layers)):
        resp = responses({n: v[:, layer].double() for n, v in k.items()}, args.eps)
        for name in LINES:
            r = resp[name]
            if name == "question":
                r = r[has_q]
            rows[name].append(
                float(r.mean() if name in ("statement", "question") else r.abs().mean())
            )
    print("\nlayer  " + "  ".join(LINES.values()))
    for layer in range(len(layers)):
        print(f"  {layer:2d}  " + "  ".join(f"{rows[n][layer]:.3f}" for n in LINES))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    if args.plot:
        write_plot(rows, args.plot, args.subject_token)
    print(f"written {args.out}")


LINES = {
    "statement": "paraphrase (statement)",
    "question": "paraphrase (question)",
    "shared": "same-last-token subject",
    "own": "other subject",
    "ordinary": "ordinary",
}


def at_subject(tok, items: list[tuple[str, str]], which: int = -1) -> list[tuple[str, int]]:
    """(prompt, index of the subject's token `which`: -1 the last) for (prompt, subject)
    pairs."""
    from editor_core.encoding import subject_token_index

    out = []
    for prompt, subject in items:
        i = subject_token_index(tok, prompt, subject, which)
        assert i is not None, (prompt, subject)
        out.append((prompt, i))
    return out


def responses(k: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """Per kind of prompt, each one-fact edit's response (n,) at one layer's keys `k[name]`
    (n, d), for the edits keyed at `k["edit"]`; "ordinary": mean |response| over C's keys."""
    ko, ke = k["ordinary"], k["edit"]
    W, self_resp = one_fact_edits(ko, ke, eps)
    out = {n: (k[n] * W.T).sum(1) / self_resp for n in ("statement", "question", "shared", "own")}
    out["ordinary"] = (ko[: ke.shape[0]] @ W / self_resp).abs().mean(0)
    return out


def write_plot(rows: dict[str, list[float]], path: Path, which: int = -1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (name, label), style in zip(LINES.items(), ("-o", "-v", "-s", "-D", "-^"), strict=True):
        ax.plot(rows[name], style, ms=3, label=label)
    where = "the subject's last token" if which == -1 else f"subject token {which}"
    ax.set_title(f"keys at {where}, in the edit's own template")
    ax.set_xlabel("layer")
    ax.set_ylabel("response of a one-fact edit (edit prompt = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
