"""Merge several `factpatch eval --out` directories into one set of tables and plots.

    python scripts/combine_eval.py OUT_IMG_DIR RUN_DIR [RUN_DIR ...] > tables.md

Simultaneous results of the same set (facts / realworld) are merged over N; sequential and
trade-off results are taken from whichever run has them.  Plots: {set}_vs_n.png,
{set}_sequential.png, {set}_tradeoff.png in OUT_IMG_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from editor_core.plots import plot_sequential, plot_tradeoff, plot_vs_n
from service.commands.eval import _COLUMNS, _table


def main(img: Path, runs: list[Path]) -> None:
    img.mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        for name in ("facts", "realworld"):
            if name not in res:
                continue
            m = merged.setdefault(
                name, {"simultaneous": {}, "sequential": {}, "tradeoff": [], "info": res[name]}
            )
            for editor, by_n in res[name]["simultaneous"].items():
                m["simultaneous"].setdefault(editor, {}).update(by_n)
            m["sequential"].update(res[name]["sequential"])
            m["tradeoff"] += res[name]["tradeoff"]
    for name, m in merged.items():
        info = m["info"]
        print(
            f"\n## {name}: {info['n_facts']} facts, {info['n_ordinary']} ordinary, "
            f"{info['n_neighborhood']} neighbourhood prompts\n"
        )
        rows = []
        for editor, by_n in m["simultaneous"].items():
            for n, r in sorted(by_n.items(), key=lambda kv: int(kv[0])):
                if "skipped" in r:
                    continue
                rows.append([editor, int(n)] + [r.get(c) for c in _COLUMNS])
        rows.sort(key=lambda r: (r[1], r[0]))
        print("\n".join(_table(["editor", "N", *_COLUMNS], rows)))
        sim = {
            e: {n: r for n, r in b.items() if "skipped" not in r}
            for e, b in m["simultaneous"].items()
        }
        if any(sim.values()):
            plot_vs_n(sim, img / f"{name}_vs_n.png", title=name)
        for run_name, hist in m["sequential"].items():
            cols = [
                "batch",
                "edits",
                "es_first_batch",
                "es",
                "gs",
                "generation",
                "ls_ordinary",
                "ls_neighborhood",
            ]
            print(f"\n### sequential: {run_name}\n")
            print("\n".join(_table(cols, [[h.get(c) for c in cols] for h in hist])))
        if m["sequential"]:
            plot_sequential(m["sequential"], img / f"{name}_sequential.png")
        if m["tradeoff"]:
            cols = [
                "knob",
                "eta_scale",
                "lambda",
                "preserve",
                "es",
                "gs",
                "generation",
                "ls_ordinary",
                "ls_neighborhood",
                "edit_seconds",
            ]
            print(f"\n### trade-off ({name})\n")
            print("\n".join(_table(cols, [[t.get(c) for c in cols] for t in m["tradeoff"]])))
            plot_tradeoff(m["tradeoff"], img / f"{name}_tradeoff.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
