"""Draw malmen-opt's value-clamp measurements (rows written by scripts/mu_sweep.py, e.g. the
thirteenth session's H200 grid in docs/data/clamp_h200.jsonl): each metric against the
number of simultaneous edits, one line per fixed clamp, plus the clamp rule (the clamp
`ValueOptConfig.clamp_for(N)` picks at each N, read off the same rows).

    python scripts/clamp_plot.py docs/data/clamp_h200.jsonl docs/img/clamp_vs_n.png \\
        --split val --mu 3000 --ref 64 --per-doubling 0.25 --min 1.5
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from editor_core.optimize import ValueOptConfig
from editor_core.plots import plot_vs_n


def clamp_of(row: dict[str, Any]) -> float:
    """The clamp a row's targets were found with (mu_sweep's targets tag; 2 when unnamed)."""
    m = re.search(r"max_norm ([0-9.]+)", row["targets"])
    return float(m.group(1)) if m else ValueOptConfig().max_norm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="val", help="rows whose run name starts with this")
    p.add_argument("--mu", type=float, default=3000.0)
    p.add_argument("--ref", type=int, default=64)
    p.add_argument("--per-doubling", type=float, default=0.25)
    p.add_argument("--min", type=float, default=1.5)
    args = p.parse_args()
    rows = [json.loads(x) for x in args.rows.read_text(encoding="utf-8").splitlines() if x]
    rows = [
        r
        for r in rows
        if r["run"].startswith(args.split) and r["mu"] == args.mu and "lr" not in r["targets"]
    ]
    rule = ValueOptConfig(
        max_norm_ref_edits=args.ref, max_norm_per_doubling=args.per_doubling, max_norm_min=args.min
    )
    lines: dict[str, dict[str, Any]] = {}
    for r in rows:
        lines.setdefault(f"clamp {clamp_of(r):g}", {})[str(r["n"])] = r
        if clamp_of(r) == rule.clamp_for(r["n"]):
            lines.setdefault("rule", {})[str(r["n"])] = r
    title = (
        f"malmen-opt, {args.split} split, μ {args.mu:g} (× N/256 past 256): value clamp; "
        f"rule {rule.max_norm:g} − {args.per_doubling:g}/doubling past {args.ref}, ≥ {args.min:g}"
    )
    plot_vs_n(dict(sorted(lines.items())), args.out, title)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
