"""Redraw a metrics-vs-N plot from a results table in docs/results.md.

Raw `results.json` files of old runs are not kept in the repository; the tables in the
report are.  This parses the first markdown table under a heading (columns as written by
`factpatch eval`: editor, N, es, gs, generation, ls_ordinary, ls_neighborhood, ...) and draws
it with the same function `factpatch eval` uses.

    python scripts/table_plot.py docs/results.md "### generated test set" docs/img/facts_vs_n.png

With `--sequential`, the table is "batch | edits | <run> | <run> ..." of the first batch's
ES after each batch ("–" where a run was not scored) and is drawn as sequential histories:

    python scripts/table_plot.py --sequential docs/results.md "### First batch's ES" out.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from editor_core.plots import plot_sequential, plot_vs_n


def parse_table(text: str, heading: str) -> dict[str, dict[str, dict[str, Any]]]:
    header, body = _rows(text, heading)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in body:
        cells = dict(zip(header, row, strict=True))
        metrics = {k: float(v) for k, v in cells.items() if k not in ("editor", "N")}
        out.setdefault(cells["editor"], {})[cells["N"]] = metrics
    return out


def _rows(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    lines = text[text.index(heading) :].splitlines()[1:]
    rows = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    body = []
    for line in lines[lines.index(rows[0]) + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip().strip("*") for c in line.strip("|").split("|")])
    return header, body


def parse_sequential(text: str, heading: str) -> dict[str, list[dict[str, Any]]]:
    header, body = _rows(text, heading)
    out: dict[str, list[dict[str, Any]]] = {run: [] for run in header[2:]}
    for cells in body:
        for run, value in zip(header[2:], cells[2:], strict=True):
            if value not in ("–", "-", ""):
                out[run].append({"edits": int(cells[1]), "es_first_batch": float(value)})
    return out


def main() -> None:
    if sys.argv[1] == "--sequential":
        source, heading, png = sys.argv[2], sys.argv[3], Path(sys.argv[4])
        plot_sequential(parse_sequential(Path(source).read_text(), heading), png)
        print(png)
        return
    source, heading, png = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    table = parse_table(Path(source).read_text(), heading)
    plot_vs_n(table, png, title=heading.lstrip("# "))
    print(f"{png}: {', '.join(f'{e} N={sorted(map(int, t))}' for e, t in table.items())}")


if __name__ == "__main__":
    main()
