"""Draw where the shipped editors stand against the project's targets.

The rows (`docs/data/where_we_stand_test.jsonl`, one line per editor and N: the numbers of
docs/results.md's first section, each with the session and command that measured it) are
drawn with the plot `factpatch eval` makes — each metric against N on a log2 axis — with
the targets (`editor_core.evaluate.TARGETS`) as black bars.

    python scripts/standing_plot.py docs/data/where_we_stand_test.jsonl docs/img/where_we_stand.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from editor_core.evaluate import TARGETS
from editor_core.plots import plot_vs_n


def read_rows(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{editor: {str(N): metrics}} from JSON lines with "editor" and "n"."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["editor"], {})[str(row["n"])] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default="generated test facts, simultaneous edits")
    args = ap.parse_args()
    plot_vs_n(read_rows(args.rows), args.out, title=args.title, targets=TARGETS)
    print(args.out)


if __name__ == "__main__":
    main()
