"""Two `factpatch eval --draws K` runs of the same facts, compared draw by draw.

A lever's effect at small N is smaller than the spread between draws (at N = 16 one draw
scores 16 neighbourhood prompts), but two settings run on the *same* draws differ by much
less than their draws do: this prints, per metric, each setting's mean, the mean of the
paired differences (B − A) and a 95 % percentile-bootstrap interval for it (resampling
draws), over the draws both runs measured with the same facts (`fact_ids`).

    python scripts/paired_draws.py out/v20_val16_shipped out/v20_val16_pin300 [--set facts]
    python scripts/paired_draws.py out/v23_val16 out/v23_val16 --where-a pin_weight=0 --where-b pin_weight=300
    python scripts/paired_draws.py out/v24_val16_protect0 out/v24_val16_m1_a --also-b out/v24_val16_m1_b

A run is a `factpatch eval --out` folder (results.json) or a `scripts/mu_sweep.py --out`
folder (rows.jsonl, one setting per μ: draw k of one N is the same facts in every sweep
with the same --seed, so rows pair by their draw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from editor_core.evaluate import SPREAD_METRICS, bootstrap_ci

EXTRA = (
    "ls_nb_shared_token",
    "ls_nb_own_token",
    "ls_same_subject",
    "ls_protected",
    "ls_protected_sure",
    "ls_nb_unprotected",
    "ls_nb_unprotected_named",
    "ls_nb_unprotected_unnamed",
    "protected_held",
    "edit_seconds",
)


def parse_where(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE filters on a mu_sweep folder's rows (VALUE read as JSON where it parses:
    `pin_weight=300` matches 300.0)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--where {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def draws_of(
    run: Path, name: str, where: dict[str, Any] | None = None
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """{(editor, N): the draws} of one run's simultaneous results in set `name`; of a
    mu_sweep folder, {("μ M", N): its rows that match `where`}, each given its draw as
    `fact_ids`."""
    sweep = run / "rows.jsonl"
    if not (run / "results.json").exists() and sweep.exists():
        out: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for line in sweep.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if any(r.get(k) != v for k, v in (where or {}).items()):
                continue
            rows = out.setdefault((f"μ {r['mu']:g}", int(r["n"])), [])
            draw = r.get("draw", 0)
            if any(x["fact_ids"] == [draw] for x in rows):
                raise SystemExit(
                    f"{sweep}: two settings at μ {r['mu']:g}, N {r['n']}, draw {draw} "
                    "(choose one with --where-a / --where-b KEY=VALUE)"
                )
            rows.append({**r, "fact_ids": [draw]})
        return out
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))[name]["simultaneous"]
    return {
        (editor, int(n)): m.get("draws", [m])
        for editor, by_n in res.items()
        for n, m in by_n.items()
        if "skipped" not in m
    }


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: both means and the paired difference over the draws with equal facts."""
    by_facts = {tuple(d.get("fact_ids", ())): d for d in a}
    pairs = [(by_facts[k], d) for d in b if (k := tuple(d.get("fact_ids", ()))) in by_facts]
    rng = np.random.default_rng(0)
    rows = []
    for metric in (*SPREAD_METRICS, *EXTRA):
        both = [
            (x[metric], y[metric]) for x, y in pairs if None not in (x.get(metric), y.get(metric))
        ]
        if not both:
            continue
        xa, xb = np.array(both).T
        diff = xb - xa
        row: dict[str, Any] = {
            "metric": metric,
            "draws": len(both),
            "a": float(xa.mean()),
            "b": float(xb.mean()),
            "diff": float(diff.mean()),
        }
        if len(both) >= 2:
            row["ci95"] = bootstrap_ci(diff.tolist(), rng)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "a", type=Path, help="the reference run (factpatch eval --out, or mu_sweep.py --out)"
    )
    ap.add_argument("b", type=Path, help="the run compared with it, on the same draws")
    ap.add_argument(
        "--also-b",
        type=Path,
        action="append",
        default=[],
        help="more folders of run B (one --draws run split with --only-draws)",
    )
    ap.add_argument("--set", default="facts", help="facts or realworld")
    for side in ("a", "b"):
        ap.add_argument(
            f"--where-{side}",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"keep only the rows of mu_sweep folder {side.upper()} with this setting "
            "(e.g. pin_weight=300)",
        )
    args = ap.parse_args()
    runs_a = draws_of(args.a, args.set, parse_where(args.where_a))
    runs_b = draws_of(args.b, args.set, parse_where(args.where_b))
    for more in args.also_b:
        for key, rows in draws_of(more, args.set, parse_where(args.where_b)).items():
            runs_b.setdefault(key, []).extend(rows)
    for key in sorted(runs_a.keys() & runs_b.keys()):
        rows = paired(runs_a[key], runs_b[key])
        print(f"\n{key[0]}, N = {key[1]}: {args.b.name} − {args.a.name}\n")
        print("| metric | draws | A | B | B − A [95 % interval] |")
        print("|---|---|---|---|---|")
        for r in rows:
            ci = f" [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if "ci95" in r else ""
            print(
                f"| {r['metric']} | {r['draws']} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f}{ci} |"
            )


if __name__ == "__main__":
    main()
