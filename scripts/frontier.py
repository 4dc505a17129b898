"""ES against neighbourhood locality for many `factpatch eval` runs: the edit-time frontier.

Each run directory's malmen rows (the simultaneous row and every trade-off row) become one
point, labelled by its knobs (η scale, anchors k, anchor weight ν, prior μ).  Prints a
markdown table sorted by the mean of ES, GS, LS_ord and LS_nb, and draws ES vs LS_nb with
and without subject anchors.

    python scripts/frontier.py out/anc/* --png docs/img/val_frontier.png --md out/frontier.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def points(run: Path) -> list[dict[str, Any]]:
    res = json.loads((run / "results.json").read_text())
    meta, facts = res["meta"], res.get("facts") or {}
    k, nu = meta.get("malmen_anchors") or 0, meta.get("malmen_anchor_weight")
    base_eta = meta.get("malmen_eta_scale") or 1.0
    out = []
    for row in (facts.get("simultaneous", {}).get("malmen") or {}).values():
        out.append({"eta": base_eta, "mu": meta.get("malmen_preserve"), **row})
    for row in facts.get("tradeoff", []):
        if row.get("knob") == "eta":
            out.append({"eta": row["eta_scale"], "mu": row.get("preserve"), **row})
    for p in out:
        p.update(k=k, nu=nu if k else None, run=run.name)
        p["mean4"] = (p["es"] + p["gs"] + p["ls_ordinary"] + p["ls_neighborhood"]) / 4
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    pts: list[dict[str, Any]] = []
    seen = set()
    for run in args.runs:
        if not (run / "results.json").is_file():
            continue
        for p in points(run):
            key = (p["eta"], p["k"], p["nu"], p["mu"], p["n"])
            if key not in seen:  # the same setting measured twice: keep the first
                seen.add(key)
                pts.append(p)
    pts.sort(key=lambda p: -p["mean4"])
    head = "| η × | anchors k | ν | μ | N | ES | GS | gen | LS_ord | LS_nb | mean of 4 | edit s |"
    lines = [head, "|" + "---|" * 12]
    for p in pts:
        lines.append(
            f"| {p['eta']:g} | {p['k']} | {p['nu'] if p['nu'] is not None else '–'} | "
            f"{p['mu']:g} | {p['n']} | {p['es']:.3f} | {p['gs']:.3f} | {p['generation']:.3f} | "
            f"{p['ls_ordinary']:.3f} | {p['ls_neighborhood']:.3f} | {p['mean4']:.3f} | "
            f"{p['edit_seconds']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for p in pts:
            groups.setdefault((p["k"], p["nu"], p["mu"]), []).append(p)
        for (k, nu, mu), ps in sorted(groups.items(), key=lambda kv: str(kv[0])):
            ps.sort(key=lambda p: p["eta"])
            label = f"μ={mu:g}, " + ("no anchors" if not k else f"{k} anchors, ν={nu:g}")
            style = "--o" if not k else "-s"
            ax.plot([p["ls_neighborhood"] for p in ps], [p["es"] for p in ps], style, label=label)
            for p in ps:
                ax.annotate(
                    f"η×{p['eta']:g}",
                    (p["ls_neighborhood"], p["es"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel("neighbourhood locality LS_nb")
        ax.set_ylabel("edit success ES")
        ax.set_title("edit-time frontier (validation facts, N = 64)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
