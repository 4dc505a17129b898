"""Where a malmen-opt edit's neighbourhood loss goes: for the facts `factpatch eval --n N`
draws, edit them at once with the shipped value-optimising checkpoint and sort every
neighbourhood prompt whose greedy answer changed by what it says now — the target of the
fact it is the neighbour of, the target of another edited fact, or something else — and by
whether its subject ends in an edited subject's last token (the token an edit is keyed at);
and, where the prompts carry a gold answer, how many of those the unedited model answered
with it still do.  Each neighbour is also placed by the unedited model's margin (nats)
between its first answer token and the runner-up, and by how far the edit moved the
residual stream after the last edited layer at the neighbour's subject's last token (the
token the edit is read at), as a fraction of the change δ its own fact asks for there
(`reach`, ‖Δz‖/‖δ‖; `along`, the cosine between the two): a neighbour is lost either
because the edit reaches it (the edit cannot tell its subject from the edited one) or
because a small push flips an answer the model was unsure of.

    OMP_NUM_THREADS=1 python scripts/neighbour_loss.py --realworld --n 64
    OMP_NUM_THREADS=1 python scripts/neighbour_loss.py --facts out/facts_ep5/val.jsonl \\
        --n 16 --draws 8

`--draws K` edits K disjoint draws of N facts one after another (`evaluate.sample_draws`,
as `factpatch eval --draws`) and pools their neighbours.  Prints the tables and writes the
changed prompts (before / after) to --out as JSON lines.
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
from editor_core.encoding import subject_token_indices, tokenize_pair
from editor_core.evaluate import (
    MARGIN_EDGES,
    greedy_tokens,
    last_token_sharing,
    margin_bins,
    requests_of,
    sample_draws,
)
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


def at_subject(
    loaded: Any, prompt: str, subject: str | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(the residual after the last edited layer at the subject's last token (H,), None
    without a subject; the next-token log-probabilities after the prompt (V,))."""
    tok, adapter = loaded.tokenizer, loaded.adapter
    ids = tok(prompt, return_tensors="pt").to(next(loaded.model.parameters()).device)
    at = subject_token_indices(tok, prompt, subject)[-1] if subject else None
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _a: Any, out: Any) -> None:
        if at is not None:
            seen["z"] = (out[0] if isinstance(out, tuple) else out)[0, at].detach().float().cpu()

    handle = adapter.blocks()[adapter.layers[-1]].register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = loaded.model(**ids).logits[0, -1].float()
    finally:
        handle.remove()
    return seen.get("z"), torch.log_softmax(logits, -1).cpu()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--facts", type=Path, help="facts with attached neighbourhood prompts")
    p.add_argument("--realworld", action="store_true", help="the hand-written real-world set")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1, help="disjoint draws of N facts, pooled")
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
    draws = sample_draws(facts, args.n, args.seed, args.draws)
    if not draws:
        raise SystemExit(f"N={args.n} exceeds the {len(facts)} facts")
    loaded = load_model(
        ModelSpec(source="smollm2-135m-instruct", layers=checkpoint_layers(args.editor)),
        args.data_dir,
    )
    tok = loaded.tokenizer
    editor = MalmenEditor.from_checkpoint(args.editor, loaded, **(args.config or {}))
    counts: Counter[tuple[str, str]] = Counter()
    same = Counter[str]()  # neighbours about a subject edited in another relation
    known = Counter[str]()  # neighbours whose gold answer the unedited model gives first
    placed: list[dict[str, Any]] = []  # per neighbour: kind, margin, reach, along, kept
    total = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for d, chosen in enumerate(draws):
            owners = [(f, nb) for f in chosen for nb in f.neighborhood]
            if not owners:
                raise SystemExit("these facts carry no neighbourhood prompts")
            total += len(owners)
            rows = draw_rows(loaded, editor, chosen, owners, args.tokens)
            edits = EditsOf(tok, chosen)
            for (fact, nb), row in zip(owners, rows, strict=True):
                kind, why = tally(tok, edits, fact, nb, row, counts, same, known)
                if row["reach"] is not None:
                    placed.append({"kind": kind, **row})
                if why != "kept":
                    fh.write(json.dumps(row["changed"] | {"kind": kind, "why": why}) + "\n")
            print(f"draw {d + 1}/{len(draws)}: {len(owners)} neighbourhood prompts", flush=True)
    print(
        f"| neighbourhood prompts ({total}, N = {args.n} × {len(draws)} draws) | own token | shared token |"
    )
    print("|---|---|---|")
    whys = sorted({w for _, w in counts}, key=lambda w: (w != "kept", w))
    for w in whys:
        cells = [counts[("own token", w)], counts[("shared token", w)]]
        print(f"| {w} | " + " | ".join(str(x) for x in cells) + " |")
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
    print_placed(placed)
    print(f"changed prompts: {args.out}")
    return 0


def draw_rows(
    loaded: Any,
    editor: MalmenEditor,
    chosen: list[Any],
    owners: list[tuple[Any, Any]],
    n_tokens: int,
) -> list[dict[str, Any]]:
    """Edit `chosen` at once; per neighbour: greedy tokens before / after, the unedited
    margin of its first token, and the edit's reach at its subject (None where its subject
    cannot be read off its fact's template)."""
    tok = loaded.tokenizer
    reqs = requests_of(chosen)
    prompts = [nb.prompt for _, nb in owners]
    before = greedy(loaded, prompts, n_tokens)
    targets = editor.residual_targets(reqs, progress=True)
    delta_of = {}  # fact id → δ (H,): its plain prompt's target minus its residual now
    for i, f in enumerate(chosen):
        if f.subject and subject_token_indices(tok, f.prompt, f.subject):
            z_now = at_subject(loaded, f.prompt, f.subject)[0]
            assert z_now is not None
            delta_of[f.id] = targets.z[i, 0].float().cpu() - z_now
    subjects = [neighbour_subject(f, nb.prompt) for f, nb in owners]
    readable = [
        s if s and f.id in delta_of and subject_token_indices(tok, nb.prompt, s) else None
        for (f, nb), s in zip(owners, subjects, strict=True)
    ]
    unedited = [
        at_subject(loaded, nb.prompt, s) for (_, nb), s in zip(owners, readable, strict=True)
    ]
    margins = [float(top[0] - top[1]) for top in (u[1].topk(2).values for u in unedited)]
    base = snapshot(loaded.adapter)
    try:
        apply_delta(
            loaded.adapter, editor.solve(editor.joint_rows(reqs, targets.z), len(reqs)), base
        )
        after = greedy(loaded, prompts, n_tokens)
        edited = [
            at_subject(loaded, nb.prompt, s)[0] if s else None
            for (_, nb), s in zip(owners, readable, strict=True)
        ]
    finally:
        restore(loaded.adapter, base)
    rows = []
    for k, ((fact, nb), b, a) in enumerate(zip(owners, before, after, strict=True)):
        reach = along = None
        was, now = unedited[k][0], edited[k]
        if was is not None and now is not None:
            dz, delta = now - was, delta_of[fact.id]
            reach = float(dz.norm() / delta.norm())
            along = float(torch.nn.functional.cosine_similarity(dz, delta, dim=0))
        rows.append(
            {
                "before": b,
                "after": a,
                "margin": margins[k],
                "reach": reach,
                "along": along,
                "changed": {
                    "prompt": nb.prompt,
                    "fact": fact.prompt + " → " + fact.target,
                    "before": tok.decode(b),
                    "after": tok.decode(a),
                },
            }
        )
    return rows


class EditsOf:
    """What one draw's edits are, for sorting its neighbours: which neighbourhood prompts
    share an edited subject's last token, each fact's first target token and relation, and
    the edited subjects."""

    def __init__(self, tok: Any, chosen: list[Any]) -> None:
        _, self.shared = last_token_sharing(tok, chosen)
        self.targets = {f.id: first_token(tok, f.prompt, f.target) for f in chosen}
        self.relation_of = {f.id: f.relation for f in chosen}
        self.subjects = {f.subject for f in chosen if f.subject}


def tally(
    tok: Any,
    edits: EditsOf,
    fact: Any,
    nb: Any,
    row: dict[str, Any],
    counts: Counter[tuple[str, str]],
    same: Counter[str],
    known: Counter[str],
) -> tuple[str, str]:
    """(own / shared token, what the neighbour says now) of one neighbour, counted."""
    targets, relation_of = edits.targets, edits.relation_of
    b, a = row["before"], row["after"]
    kind = "shared token" if edits.shared.get(nb.prompt) else "own token"
    if neighbour_subject(fact, nb.prompt) in edits.subjects:
        same["all"] += 1
        same["kept"] += a == b
    if nb.answer and b[0] == first_token(tok, nb.prompt, nb.answer):
        known["known"] += 1
        known["kept"] += a[0] == b[0]
        known["fact target"] += a[0] == targets[fact.id]
    if a == b:
        why = "kept"
    elif a[0] == targets[fact.id]:
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
    return kind, why


def print_placed(placed: list[dict[str, Any]]) -> None:
    """Kept (all compared tokens), reach and along, by kind and by unedited margin
    (`evaluate.margin_bins`)."""
    if not placed:
        return
    print("\n| neighbours | margin (nats) | n | kept | reach ‖Δz‖/‖δ‖ | along cos(Δz, δ) |")
    print("|---|---|---|---|---|---|")
    for kind in ("own token", "shared token"):
        rows = [r for r in placed if r["kind"] == kind]
        if not rows:
            continue
        margin = torch.tensor([r["margin"] for r in rows])
        cols = {
            "kept": torch.tensor([float(r["before"] == r["after"]) for r in rows]),
            "reach": torch.tensor([r["reach"] for r in rows]),
            "along": torch.tensor([r["along"] for r in rows]),
        }
        print(
            f"| {kind} | all | {len(rows)} | "
            + " | ".join(f"{float(c.mean()):.3f}" for c in cols.values())
            + " |"
        )
        by = {k: margin_bins(c, margin, MARGIN_EDGES) for k, c in cols.items()}
        for i, b in enumerate(by["kept"]):
            n = round(b["share"] * len(rows))
            if n:
                cells = " | ".join(f"{by[k][i]['ls']:.3f}" for k in cols)
                print(f"| {kind} | [{b['lo']:g}, {b['hi']:g}) | {n} | {cells} |")


if __name__ == "__main__":
    raise SystemExit(main())
