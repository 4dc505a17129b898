"""Draw what keep prompts and paraphrases sent with an edit do to malmen-opt (rows written
by scripts/mu_sweep.py, e.g. the fourteenth session's docs/data/keep_paraphrases_val.jsonl,
the sixteenth session's paraphrase-key rows, or the seventeenth session's held directions):
one panel per N, one group of bars per metric, one bar per setting.

    python scripts/keep_plot.py docs/data/keep_paraphrases_val.jsonl \\
        docs/img/keep_paraphrases.png
    python scripts/keep_plot.py docs/data/paraphrase_keys_test.jsonl \\
        docs/img/paraphrase_keys.png --split test \\
        --title "malmen-opt: the paraphrases sent in the spread's keys too (w = paraphrase_keys)"
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from editor_core.plots import save_with_legend_below

METRICS = (
    ("es", "ES"),
    ("gs", "GS"),
    ("generation", "gen"),
    ("ls_ordinary", "LS ord"),
    ("ls_neighborhood", "LS nb"),
    ("ls_same_subject", "LS same\nsubject"),
)


def setting(row: dict[str, Any]) -> str:
    """The row's keep / paraphrase setting, read off mu_sweep's targets tag."""
    keep = re.search(r"keep ([0-9.]+)", row["targets"])
    para = re.search(r"(\d+) paraphrases", row["targets"])
    parts = ([f"{para.group(1)} paraphrases"] if para else []) + (
        [f"keep {keep.group(1)}"] if keep else []
    )
    if row.get("paraphrase_keys"):
        parts.append(f"in the keys, w = {row['paraphrase_keys']:g}")
    if row.get("hold_rank"):
        parts.append(f"hold {row['hold_rank']}")
    return " + ".join(parts) or "shipped (neither)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="validation", help="named in each panel's title")
    p.add_argument(
        "--title", default="malmen-opt: keep prompts and paraphrases sent with each edit"
    )
    args = p.parse_args()
    rows = [json.loads(x) for x in args.rows.read_text(encoding="utf-8").splitlines() if x]
    ns = sorted({r["n"] for r in rows})
    rank = {setting(r): r.get("hold_rank") or 0 for r in rows}  # hold 32 before hold 128
    order = sorted(rank, key=lambda s: (s != "shipped (neither)", rank[s], s))
    fig, axes = plt.subplots(1, len(ns), figsize=(6.5 * len(ns), 4.6), squeeze=False)
    width = 0.8 / len(order)
    for ax, n in zip(axes[0], ns, strict=True):
        at_n = {setting(r): r for r in rows if r["n"] == n}
        for k, name in enumerate(order):
            if name not in at_n:
                continue
            xs = [i + (k - (len(order) - 1) / 2) * width for i in range(len(METRICS))]
            values = [at_n[name].get(m) or 0.0 for m, _ in METRICS]
            ax.bar(xs, values, width, label=name, color=f"C{k}")  # one colour a setting
        ax.set_xticks(range(len(METRICS)), [label for _, label in METRICS])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{args.split}, N = {n} simultaneous edits")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score")
    save_with_legend_below(
        fig, axes[0][0], args.out, min(len(order), 4), args.title, bottom=0.1, order=order
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
