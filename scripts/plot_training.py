"""Meta-training curves of several runs in one PNG (editor_core.plots.plot_training).

    python scripts/plot_training.py --out docs/img/subject_hypernet.png \\
        "lr 3e-4=runs/sub_3e-4/last/trainer_state.json" "lr 1e-3=out/gpu7/train_1e-3.log"

Each run is LABEL=PATH, PATH a `trainer_state.json` (its "history") or a log holding the
history as JSON lines (what scripts/gpu_train.sh prints at the end of a device run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from editor_core.plots import plot_training


def read_history(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return list(json.loads(text)["history"])
    rows = [json.loads(line) for line in text.splitlines() if line.startswith('{"')]
    return [r for r in rows if "step" in r]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=PATH")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="")
    args = p.parse_args()
    histories = {}
    for spec in args.runs:
        label, _, path = spec.partition("=")
        if not path:
            p.error(f"{spec!r}: expected LABEL=PATH")
        histories[label] = read_history(Path(path))
    plot_training(histories, args.out, args.title)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
