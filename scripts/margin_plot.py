"""Draw where ordinary-text locality is lost: LS_ord per bin of the unedited model's margin
over its runner-up (`ls_ord_by_margin` in scripts/mu_sweep.py's rows), one line per N,
over bars giving each bin's share of the scored positions.

    python scripts/margin_plot.py docs/data/ls_by_margin_val.jsonl docs/img/ls_by_margin.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def label(lo: float, hi: float) -> str:
    return f"≥ {lo:g}" if hi == float("inf") else f"{lo:g}–{hi:g}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path, help="mu_sweep rows with ls_ord_by_margin")
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="validation")
    args = p.parse_args()
    rows = [json.loads(x) for x in args.rows.read_text(encoding="utf-8").splitlines() if x]
    rows = sorted((r for r in rows if r.get("ls_ord_by_margin")), key=lambda r: r["n"])
    if not rows:
        raise SystemExit(f"no row of {args.rows} has ls_ord_by_margin")
    bins = rows[0]["ls_ord_by_margin"]
    xs = list(range(len(bins)))
    fig, ax = plt.subplots(figsize=(8, 4.6))
    share = ax.twinx()
    share.bar(xs, [b["share"] for b in bins], 0.6, color="0.85", zorder=0)
    share.set_ylabel("share of scored positions (bars)")
    share.set_ylim(0, 1)
    ax.set_zorder(share.get_zorder() + 1)
    ax.patch.set_visible(False)
    for k, r in enumerate(rows):
        ys = [b["ls"] for b in r["ls_ord_by_margin"]]
        ax.plot(
            xs, ys, marker="o", color=f"C{k}", label=f"N = {r['n']} (LS_ord {r['ls_ordinary']:.3f})"
        )
    ax.set_xticks(xs, [label(b["lo"], b["hi"]) for b in bins])
    ax.set_xlabel("unedited model's margin over its runner-up (nats)")
    ax.set_ylabel("LS_ord: unedited token kept")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"malmen-opt, {args.split}: ordinary-text locality by how sure the model was")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
