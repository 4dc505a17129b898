"""What paraphrases sent with each edit buy, against how many are sent: one panel per
editor — malmen-opt (`value_opt.paraphrase_max`: they join each value's loss) and the
hyper-network editor (`paraphrase_rows`: they are edited too) — with the metrics against
the number of paraphrases per edit.

Reads `scripts/mu_sweep.py` rows (malmen-opt; the count is in the targets tag) and
`factpatch eval` results.json files (the hyper-network editor; the count is
`paraphrase_rows` in the run's --malmen-config), writes the rows it drew as JSONL and the
plot:

    python scripts/paraphrase_plot.py --opt out/v15_p*/rows.jsonl \\
        --hypernet out/v15_hn_rows*/results.json \\
        --rows docs/data/paraphrases_sent_val.jsonl --out docs/img/paraphrases_sent.png
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
    ("generation", "generation"),
    ("ls_ordinary", "LS ordinary"),
    ("ls_neighborhood", "LS neighbourhood"),
    ("ls_same_subject", "LS same subject"),
)
KEEP = ("n", *(m for m, _ in METRICS), "gs_question", "gs_statement")


def opt_rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "keep" in row["targets"]:
            continue  # keep prompts are another experiment
        k = re.search(r"(\d+) paraphrases", row["targets"])
        out.append(
            {"editor": "malmen-opt", "paraphrases": int(k.group(1)) if k else 0}
            | {f: row.get(f) for f in KEEP}
        )
    return out


def hypernet_rows(path: Path) -> list[dict[str, Any]]:
    results = json.loads(path.read_text(encoding="utf-8"))
    k = (results["meta"].get("malmen_config") or {}).get("paraphrase_rows", 0)
    return [
        {"editor": "malmen (hyper-network)", "paraphrases": k} | {f: row.get(f) for f in KEEP}
        for row in results["facts"]["simultaneous"].get("malmen", {}).values()
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--opt", type=Path, nargs="*", default=[], help="mu_sweep rows.jsonl")
    p.add_argument("--hypernet", type=Path, nargs="*", default=[], help="eval results.json")
    p.add_argument("--rows", type=Path, default=None, help="also write the rows drawn (JSONL)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = [r for f in args.opt for r in opt_rows(f)]
    rows += [r for f in args.hypernet for r in hypernet_rows(f)]
    rows.sort(key=lambda r: (r["editor"], r["n"], r["paraphrases"]))
    if args.rows:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    panels = sorted({(r["editor"], r["n"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (editor, n) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if r["editor"] == editor and r["n"] == n]
        ks = [r["paraphrases"] for r in mine]
        for metric, label in METRICS:
            ys = [r.get(metric) for r in mine]
            if any(y is not None for y in ys):
                ax.plot(ks, [float("nan") if y is None else y for y in ys], "o-", label=label)
        ax.set_xticks(sorted(set(ks)))
        ax.set_xlabel("paraphrases sent with each edit")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{editor}, validation N = {n}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score")
    save_with_legend_below(fig, axes[0][0], args.out, len(METRICS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
