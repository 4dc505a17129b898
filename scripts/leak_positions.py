"""Through which tokens of a neighbourhood prompt does a malmen-opt edit reach it?

An edit is keyed at its subject's last token, but the weight change it makes acts on every
token of every prompt.  A neighbourhood prompt ("Zylo Labs is headquartered in", for an
edit of "Acme Group is headquartered in") can therefore be moved through its own subject's
tokens — where its key resembles the edited subject's — or through the relation's tokens
after it, which the edit prompt shares word for word.  This edits the N facts
`factpatch eval --n N` draws, all at once, then re-runs each neighbourhood prompt with the
shift applied at some of its tokens only and counts the prompts whose next token (the
first answer token) is still the unedited model's:

    all          the edit as applied (what LS_nb sees, on its first answer token)
    subject      the shift at the neighbour's subject tokens only
    last         at the subject's last token only
    rest         at every token except the subject's
    none         no shift (1.0 by construction)

The edit prompts are run the same way (ES on the first target token) as a check that the
edit itself acts through the subject.  Rows are split by whether the neighbour's subject
ends in the same token as an edited subject, and by whether the unedited model was sure of
its answer (margin ≥ `evaluate.SURE_MARGIN` nats over the runner-up).

    OMP_NUM_THREADS=2 python scripts/leak_positions.py \\
        --facts out/facts_ep5/val.jsonl --neighborhood data/facts/neighborhood_val.jsonl \\
        --n 64 --all-templates --out out/leak_64.json

The weight change is cached next to --out (`*.delta.safetensors`), so a rerun only scores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from editor_core.checkpoint import checkpoint_layers
from editor_core.config import ModelSpec
from editor_core.data import read_facts, read_locality
from editor_core.data.formats import Fact, neighbour_subject
from editor_core.editor import MalmenEditor
from editor_core.encoding import subject_last_token, subject_token_indices
from editor_core.evaluate import SURE_MARGIN, requests_of, sample_facts
from editor_core.hooks import shifted
from editor_core.loading import load_model
from editor_core.progress import bar

CK = Path("editor_core/checkpoints/smollm2-135m-instruct-optimise")
MASKS = ("all", "subject", "last", "rest", "none")


def position_mask(kind: str, n_tokens: int, subject: Sequence[int]) -> torch.Tensor:
    """(L,) 1 where the shift acts: every token, the subject's tokens, its last, the rest."""
    m = torch.zeros(n_tokens)
    if kind == "all":
        m[:] = 1
    elif kind == "subject":
        m[list(subject)] = 1
    elif kind == "last":
        m[subject[-1]] = 1
    elif kind == "rest":
        m[:] = 1
        m[list(subject)] = 0
    elif kind != "none":
        raise ValueError(f"unknown mask {kind!r}")
    return m


@torch.no_grad()
def next_logits(
    loaded: Any, shifts: dict[str, torch.Tensor], ids: list[int], mask: torch.Tensor
) -> torch.Tensor:
    """The next-token logits (V,) after `ids` with the shift at `mask`."""
    x = torch.tensor([ids])
    with shifted(loaded.adapter, shifts, mask):
        return loaded.model(input_ids=x).logits[0, -1].float()


def edited_delta(loaded: Any, editor: MalmenEditor, facts: list[Fact], path: Path) -> Any:
    """The shifts of editing `facts` at once, from `path` when it holds these facts."""
    meta_path = path.with_suffix(".json")
    ids = [f.id for f in facts]
    if path.exists() and json.loads(meta_path.read_text())["ids"] == ids:
        return load_file(str(path))
    shifts = editor.compute_delta(requests_of(facts), progress=True).shifts
    save_file({n: s.contiguous() for n, s in shifts.items()}, str(path))
    meta_path.write_text(json.dumps({"ids": ids}))
    return shifts


def score(
    loaded: Any,
    shifts: dict[str, torch.Tensor],
    items: Sequence[tuple[str, str, int | None]],
    desc: str,
) -> list[dict[str, Any]]:
    """Per (prompt, subject, wanted token or None = the unedited model's): the unedited
    margin and, per mask, whether the shifted argmax is the wanted token."""
    tok = loaded.tokenizer
    out = []
    for prompt, subject, wanted in bar(items, desc=desc):
        ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
        subj = subject_token_indices(tok, prompt, subject)
        if not subj:
            continue
        base = next_logits(loaded, shifts, ids, position_mask("none", len(ids), subj))
        top2 = base.log_softmax(-1).topk(2).values
        want = int(base.argmax()) if wanted is None else wanted
        row: dict[str, Any] = {"prompt": prompt, "margin": float(top2[0] - top2[1])}
        for kind in MASKS:
            logits = next_logits(loaded, shifts, ids, position_mask(kind, len(ids), subj))
            row[kind] = int(logits.argmax()) == want
        out.append(row)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {"n": n, **{k: sum(r[k] for r in rows) / n if n else None for k in MASKS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--editor", type=Path, default=CK)
    ap.add_argument("--facts", type=Path, required=True)
    ap.add_argument("--neighborhood", type=Path, required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument(
        "--all-templates",
        action="store_true",
        help="every prompt of --neighborhood written in an edited fact's template with a "
        "subject no edit names (default: the drawn facts' own neighbourhood prompts)",
    )
    args = ap.parse_args()

    spec = ModelSpec(source="smollm2-135m-instruct", layers=checkpoint_layers(args.editor))
    loaded = load_model(spec, args.data_dir)
    editor = MalmenEditor.from_checkpoint(args.editor, loaded)
    facts = sample_facts(read_facts(args.facts), args.n, args.seed)
    if facts is None:
        raise SystemExit(f"--n {args.n} exceeds the facts in {args.facts}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shifts = edited_delta(loaded, editor, facts, args.out.with_suffix(".delta.safetensors"))

    tok = loaded.tokenizer
    edited = {f.subject for f in facts if f.subject}
    ends = {subject_last_token(tok, s) for s in edited}
    items, seen = [], set()
    for p in read_locality(args.neighborhood):
        for f in facts if args.all_templates else [f for f in facts if p in f.neighborhood]:
            s = neighbour_subject(f, p.prompt)
            if s is not None and s not in edited and p.prompt not in seen:
                items.append((p.prompt, s, None))
                seen.add(p.prompt)
    nb = score(loaded, shifts, items, "neighbourhood prompts")
    subject_of = {prompt: s for prompt, s, _ in items}
    edits = [
        (f.prompt, f.subject, int(tok(" " + f.target, add_special_tokens=False).input_ids[0]))
        for f in facts
        if f.subject
    ]
    es = score(loaded, shifts, edits, "edit prompts")
    for r in nb:
        r["shared_token"] = subject_last_token(tok, subject_of[r["prompt"]]) in ends
    report = {
        "n_edits": args.n,
        "edit_prompts (ES on the first target token)": summary(es),
        "neighbourhood, all": summary(nb),
        "neighbourhood, shared last token": summary([r for r in nb if r["shared_token"]]),
        "neighbourhood, own last token": summary([r for r in nb if not r["shared_token"]]),
        "neighbourhood, sure (margin >= 1 nat)": summary(
            [r for r in nb if r["margin"] >= SURE_MARGIN]
        ),
        "rows": nb,
    }
    args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(
        f"N = {args.n}: share of prompts whose next token is the one wanted, by where the shift acts"
    )
    print("| prompts | n | " + " | ".join(MASKS) + " |")
    print("|---|---|" + "---|" * len(MASKS))
    for name, s in report.items():
        if isinstance(s, dict) and "n" in s:
            cells = " | ".join("–" if s[k] is None else f"{s[k]:.3f}" for k in MASKS)
            print(f"| {name} | {s['n']} | {cells} |")


if __name__ == "__main__":
    main()
