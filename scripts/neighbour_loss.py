"""Where a malmen-opt edit's neighbourhood loss goes: for the facts `factpatch eval --n N`
draws, edit them at once with the shipped value-optimising checkpoint and sort every
neighbourhood prompt whose greedy answer changed by what it says now — the target of the
fact it is the neighbour of, the target of another edited fact, or something else — and by
whether its subject ends in an edited subject's last token (the token an edit is keyed at);
and, where the prompts carry a gold answer, how many of those the unedited model answered
with it still do.

    OMP_NUM_THREADS=1 python scripts/neighbour_loss.py --realworld --n 64

Prints a table and writes the changed prompts (before / after) to --out as JSON lines.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from editor_core.apply import apply_delta, restore, snapshot
from editor_core.checkpoint import checkpoint_layers
from editor_core.config import ModelSpec
from editor_core.data import read_facts, realworld_facts
from editor_core.data.formats import neighbour_subject
from editor_core.editor import MalmenEditor
from editor_core.encoding import tokenize_pair
from editor_core.evaluate import greedy_tokens, last_token_sharing, requests_of, sample_facts
from editor_core.loading import load_model

CK = Path("editor_core/checkpoints/smollm2-135m-instruct-optimise")


def greedy(loaded: Any, prompts: list[str], n_tokens: int) -> list[list[int]]:
    """The first `n_tokens` greedy tokens after each prompt."""
    tok = loaded.tokenizer
    ids = [list(tok(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    with torch.no_grad():
        return greedy_tokens(loaded.model, ids, n_tokens, tok.pad_token_id or 0)


def first_token(tok: Any, prompt: str, answer: str) -> int:
    """The first token of `answer` after `prompt`, by the tokenisation rule (MALMEN.md §2)."""
    return tokenize_pair(tok, prompt, answer)[1][0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", type=Path, help="facts with attached neighbourhood prompts")
    p.add_argument("--realworld", action="store_true", help="the hand-written real-world set")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--editor", type=Path, default=CK)
    p.add_argument("--tokens", type=int, default=3, help="greedy tokens compared")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, default=Path("out/neighbour_loss.jsonl"))
    p.add_argument(
        "--config",
        type=json.loads,
        default=None,
        help="""JSON overrides of the editor's settings, e.g. '{"value_opt": {"keep_weight": 2}}'""",
    )
    args = p.parse_args()
    facts = realworld_facts() if args.realworld else read_facts(args.facts)
    chosen = sample_facts(facts, args.n, args.seed)
    if chosen is None:
        raise SystemExit(f"N={args.n} exceeds the {len(facts)} facts")
    loaded = load_model(
        ModelSpec(source="smollm2-135m-instruct", layers=checkpoint_layers(args.editor)),
        args.data_dir,
    )
    tok = loaded.tokenizer
    editor = MalmenEditor.from_checkpoint(args.editor, loaded, **(args.config or {}))
    owners = [(f, nb) for f in chosen for nb in f.neighborhood]
    if not owners:
        raise SystemExit("these facts carry no neighbourhood prompts")
    _, shared = last_token_sharing(tok, chosen)
    prompts = [nb.prompt for _, nb in owners]
    before = greedy(loaded, prompts, args.tokens)
    base = snapshot(loaded.adapter)
    try:
        apply_delta(loaded.adapter, editor.compute_delta(requests_of(chosen)), base)
        after = greedy(loaded, prompts, args.tokens)
    finally:
        restore(loaded.adapter, base)
    targets = {f.id: first_token(tok, f.prompt, f.target) for f in chosen}
    relation_of = {f.id: f.relation for f in chosen}
    counts: Counter[tuple[str, str]] = Counter()
    edited_subjects = {f.subject for f in chosen if f.subject}
    same = Counter[str]()  # neighbours about a subject edited in another relation
    known = Counter[str]()  # neighbours whose gold answer the unedited model gives first
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for (fact, nb), b, a in zip(owners, before, after, strict=True):
            kind = "shared token" if shared.get(nb.prompt) else "own token"
            if neighbour_subject(fact, nb.prompt) in edited_subjects:
                same["all"] += 1
                same["kept"] += a == b
            if nb.answer and b[0] == first_token(tok, nb.prompt, nb.answer):
                known["known"] += 1
                known["kept"] += a[0] == b[0]
                known["fact target"] += a[0] == targets[fact.id]
            if a == b:
                counts[(kind, "kept")] += 1
                continue
            if a[0] == targets[fact.id]:
                why = "its fact's target"
            elif a[0] in {t for i, t in targets.items() if relation_of[i] == fact.relation}:
                why = "another edit's target, same relation"
            elif a[0] in set(targets.values()):
                why = "another edit's target, other relation"
            elif a[0] == b[0]:
                why = "same first token, later tokens differ"
            else:
                why = "something else"
            counts[(kind, why)] += 1
            fh.write(
                json.dumps(
                    {
                        "prompt": nb.prompt,
                        "fact": fact.prompt + " → " + fact.target,
                        "kind": kind,
                        "why": why,
                        "before": tok.decode(b),
                        "after": tok.decode(a),
                    }
                )
                + "\n"
            )
    total = len(owners)
    print(f"| neighbourhood prompts ({total}, N = {args.n}) | own token | shared token |")
    print("|---|---|---|")
    whys = sorted({w for _, w in counts}, key=lambda w: (w != "kept", w))
    for w in whys:
        row = [counts[("own token", w)], counts[("shared token", w)]]
        print(f"| {w} | " + " | ".join(str(x) for x in row) + " |")
    if known["known"]:
        print(
            f"\nneighbours whose gold answer the unedited model gives as its first token: "
            f"{known['known']}; still given after the edit: {known['kept']}; now the target of "
            f"the fact they neighbour: {known['fact target']}"
        )
    if same["all"]:
        print(
            f"\nneighbours about a subject edited in another relation: {same['all']}; "
            f"unchanged: {same['kept']}"
        )
    print(f"changed prompts: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
