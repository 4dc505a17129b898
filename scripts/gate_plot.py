"""Metrics against the scope gate's threshold, from `mu_sweep.py --gate` rows: each
metric's mean over the draws every threshold has, the ungated weight update at the left
("off"), the issue's targets for N dashed.

    python scripts/gate_plot.py docs/data/v27_val16/rows.jsonl docs/img/gate_threshold_val16.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = {
    "es": "ES",
    "gs": "GS",
    "generation": "generation",
    "ls_ordinary": "LS ordinary",
    "ls_neighborhood": "LS neighbourhood",
}
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
TARGETS = {
    16: (0.98, 0.85, 0.95, 0.95),
    256: (0.95, 0.80, 0.90, 0.90),
    1024: (0.9, 0.7, 0.85, 0.85),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--title", default="")
    args = p.parse_args()
    rows = [json.loads(x) for x in args.rows.read_text(encoding="utf-8").splitlines() if x]
    by: dict[float | None, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        by[r.get("gate")][r.get("draw", 0)] = r
    common = set.intersection(*(set(d) for d in by.values()))
    gates = sorted(by, key=lambda g: -2.0 if g is None else g)
    xs = list(range(len(gates)))
    n = rows[0]["n"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (key, label), colour in zip(METRICS.items(), COLOURS, strict=True):
        ys = [sum(by[g][d][key] for d in common) / len(common) for g in gates]
        ax.plot(xs, ys, "o-", label=label, color=colour)
    if n in TARGETS:
        es, gs, ls, gen = TARGETS[n]
        for value, i in ((es, 0), (gs, 1), (gen, 2), (ls, 3), (ls, 4)):
            ax.axhline(value, ls="--", lw=0.8, color=COLOURS[i], alpha=0.7)
    ax.set_xticks(xs, ["off" if g is None else f"{g:g}" for g in gates])
    ax.set_xlabel("scope gate: cosine to an edit's key needed for its change to act")
    ax.set_ylabel(f"mean over {len(common)} draws")
    ax.set_title(args.title or f"N = {n}: metrics against the gate (dashed: targets)")
    ax.set_ylim(0.6, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
