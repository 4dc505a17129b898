"""What a protected list costs an edit, against its length: one batch of real-world edits
solved holding 0, 300, 1000, … protected prompts, with the prompts scored from the lowest
edited block (`editor_core/resume.py`) and, for comparison, by full passes.

    OMP_NUM_THREADS=1 python scripts/protect_cost.py --sizes 0,300,1000,3000 --out out/protect_cost

Per list length: seconds to read the list (answers, states, once per list change),
seconds of the protected solve and of one check of the list (the worker's after each
version), prompts held, whether every edit still lands (greedy continuation starts with
the target) and how many listed prompts' sure answers it changed.  The list is the
edited facts' own neighbourhood prompts (their question asked of other subjects: where
the served editor leaks), then the generated data's neighbourhood and ordinary prompts, in
file order.  Timings on a shared CPU are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from editor_core import ModelSpec, load_model
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.checkpoint import checkpoint_layers
from editor_core.data import read_locality, realworld_facts
from editor_core.editor import MalmenEditor
from editor_core.encoding import EditRequest
from editor_core.evaluate import SURE_MARGIN, changed_prompts, generation_check

SHIPPED = Path("editor_core/checkpoints/smollm2-135m-instruct")
POOL = ("data/facts/neighborhood_train.jsonl", "data/facts/locality_train.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--editor", type=Path, default=SHIPPED)
    ap.add_argument("--n", type=int, default=16, help="real-world edits in the batch")
    ap.add_argument("--sizes", default="0,300,1000,3000", help="protected list lengths")
    ap.add_argument("--pool", default=",".join(POOL), help="JSONL files the list is taken from")
    ap.add_argument("--full-passes", action="store_true", help="also time without resuming")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of seconds against length")
    ap.add_argument(
        "--plot-only", action="store_true", help="only redraw --plot from --out's rows.jsonl"
    )
    args = ap.parse_args()
    if args.plot_only:
        done = [json.loads(x) for x in (args.out / "rows.jsonl").read_text().splitlines()]
        plot(done, args.plot)
        return

    spec = ModelSpec(device="cpu", layers=checkpoint_layers(args.editor))
    loaded = load_model(spec, data_dir=args.data_dir)
    editor = MalmenEditor.from_checkpoint(args.editor, loaded)
    facts = realworld_facts()[: args.n]
    edits = editor.with_subjects([EditRequest(f.prompt, f.target, f.subject) for f in facts])
    # first the edited facts' own neighbours (their question about other subjects: where
    # the shipped editor leaks), then other facts' prompts
    pool = [p for f in facts for p in f.neighborhood]
    pool += [p for path in args.pool.split(",") for p in read_locality(Path(path))]
    args.out.mkdir(parents=True, exist_ok=True)
    unheld = editor.compute_delta(edits)  # the same edits holding nothing
    rows: list[dict] = []
    for size in (int(x) for x in args.sizes.split(",")):
        modes = ["resumed", "full"] if args.full_passes and size else ["resumed"]
        for mode in modes:
            rows.append(measure(loaded, editor, edits, pool[:size], mode, unheld))
            print(json.dumps(rows[-1]), flush=True)
            # written after every row: a stopped run keeps what it measured
            (args.out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (args.out / "table.md").write_text(table(rows))
    print(table(rows))
    if args.plot is not None:
        plot(rows, args.plot)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode, style in (("resumed", "-"), ("full", "--")):
        sel = sorted(
            (r for r in rows if r["scoring"] == mode and r["listed"]), key=lambda r: r["listed"]
        )
        if not sel:
            continue
        x = [r["listed"] for r in sel]
        for key, colour, what in (
            ("solve_s", "tab:blue", "protected solve"),
            ("check_s", "tab:orange", "one check of the list"),
        ):
            label = f"{what}, {'from stored states' if mode == 'resumed' else 'full passes'}"
            ax.plot(x, [r[key] for r in sel], style, marker="o", color=colour, label=label)
        if mode == "resumed":
            ax.plot(
                x,
                [r["read_s"] for r in sel],
                ":",
                marker="s",
                color="tab:grey",
                label="reading the list (once per prompt added)",
            )
    plain = [r["solve_s"] for r in rows if r["listed"] == 0]
    if plain:
        ax.axhline(plain[0], color="black", lw=0.8, label="the same edits, no list")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("protected prompts listed")
    ax.set_ylabel("seconds (one CPU thread)")
    ax.set_title("16 real-world edits, served editor: what a protected list costs", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    lines = [
        "| listed | scoring | read s | solve s | check s | held | edits landed | "
        "listed prompts a sure answer of which changes: held / unheld |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['listed']} | {r['scoring']} | {r['read_s']:.1f} | {r['solve_s']:.1f} | "
            f"{r['check_s']:.1f} | {r['held']} | {r['landed']:.3f} | {r['changed']} / "
            f"{r.get('changed_unheld', '–')} |"
        )
    return "\n".join(lines) + "\n"


def _changed(loaded, editor: MalmenEditor, delta) -> tuple[int, float]:
    """(listed prompts a sure answer of which `delta` changes, seconds to check them)."""
    if editor.protected is None:
        return 0, 0.0
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, delta, masters)
    try:
        t0 = time.perf_counter()
        rec = editor.protected.record
        n = len(changed_prompts(loaded.model, loaded.tokenizer, rec, 32, SURE_MARGIN))
        return n, time.perf_counter() - t0
    finally:
        restore(loaded.adapter, masters)


def measure(loaded, editor: MalmenEditor, edits, listed, mode: str, unheld) -> dict:
    t0 = time.perf_counter()
    held = editor.protect(listed)
    read_s = time.perf_counter() - t0
    if held is not None and mode == "full":
        editor.protected = replace(held, record=replace(held.record, resume=None))
    t0 = time.perf_counter()
    delta = editor.compute_delta(edits)
    solve_s = time.perf_counter() - t0
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, delta, masters)
    try:
        landed = generation_check(loaded.model, loaded.tokenizer, edits)
    finally:
        restore(loaded.adapter, masters)
    changed, check_s = _changed(loaded, editor, delta)
    changed_unheld, _ = _changed(loaded, editor, unheld)
    return {
        "listed": len(listed),
        "scoring": mode,
        "read_s": read_s,
        "solve_s": solve_s,
        "check_s": check_s,
        "held": len(editor.last_held),
        "landed": sum(landed) / len(landed),
        "changed": changed,
        "changed_unheld": changed_unheld,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    main()
