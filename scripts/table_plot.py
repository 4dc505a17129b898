"""Redraw a metrics-vs-N plot from a results table in docs/results.md.

Raw `results.json` files of old runs are not kept in the repository; the tables in the
report are.  This parses the first markdown table under a heading (columns as written by
`factpatch eval`: editor, N, es, gs, generation, ls_ordinary, ls_neighborhood, ...) and draws
it with the same function `factpatch eval` uses.

    python scripts/table_plot.py docs/results.md "### generated test set" docs/img/facts_vs_n.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from editor_core.plots import plot_vs_n


def parse_table(text: str, heading: str) -> dict[str, dict[str, dict[str, Any]]]:
    lines = text[text.index(heading) :].splitlines()[1:]
    rows = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for line in lines[lines.index(rows[0]) + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        metrics = {k: float(v) for k, v in cells.items() if k not in ("editor", "N")}
        out.setdefault(cells["editor"], {})[cells["N"]] = metrics
    return out


def main() -> None:
    source, heading, png = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    table = parse_table(Path(source).read_text(), heading)
    plot_vs_n(table, png, title=heading.lstrip("# "))
    print(f"{png}: {', '.join(f'{e} N={sorted(map(int, t))}' for e, t in table.items())}")


if __name__ == "__main__":
    main()
