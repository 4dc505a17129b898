"""Merge several `factpatch eval --out` directories into one report (results.md + plots).

    python scripts/combine_eval.py OUT_DIR RUN_DIR [RUN_DIR ...]

Simultaneous results of the same set (facts / realworld) are merged over editors and N;
sequential histories and trade-off rows are collected from every run.  The report is
written by the same code as `factpatch eval` (`service.commands.eval.write_report`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.commands.eval import write_report


def merge(runs: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        merged.setdefault("meta", res["meta"])
        for name in ("facts", "realworld"):
            if name not in res:
                continue
            m = merged.setdefault(
                name, {**res[name], "simultaneous": {}, "sequential": {}, "tradeoff": []}
            )
            for editor, by_n in res[name]["simultaneous"].items():
                m["simultaneous"].setdefault(editor, {}).update(by_n)
            m["sequential"].update(res[name]["sequential"])
            m["tradeoff"] += res[name]["tradeoff"]
    return merged


if __name__ == "__main__":
    print(write_report(merge([Path(p) for p in sys.argv[2:]]), Path(sys.argv[1])))
