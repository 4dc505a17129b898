"""What a scope gate (editor_core/gate.py) costs a forward pass: the model with R edit keys
per edited module gated in, against the same model with the change written into its
weights, in the same process (ratios; absolute times on a shared CPU are noise).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/gate_overhead.py \\
        --editor editor_core/checkpoints/smollm2-135m-instruct-optimise --keys 16,256,1024,4096
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from editor_core.checkpoint import checkpoint_layers
from editor_core.config import ModelSpec
from editor_core.gate import ScopeGate, gated
from editor_core.loading import load_model


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--editor", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--keys", default="16,256,1024,4096")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    loaded = load_model(
        ModelSpec(source=args.model, layers=checkpoint_layers(args.editor)), args.data_dir
    )
    model, adapter = loaded.model, loaded.adapter
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 20000, (1, args.prompt_tokens), generator=g)
    shifts = {n: torch.randn(*adapter.shapes()[n], generator=g) * 1e-4 for n in adapter.names}

    past = model(input_ids=ids, use_cache=True).past_key_values
    step = ids[:, -1:]

    @torch.no_grad()
    def prefill() -> None:
        model(input_ids=ids, use_cache=True)

    @torch.no_grad()
    def decode_step() -> None:
        model(input_ids=step, past_key_values=past)

    rows = []
    for r in [int(x) for x in args.keys.split(",") if x.strip()]:
        keys = {
            n: F.normalize(torch.randn(r, adapter.shapes()[n][0], generator=g), dim=-1)
            for n in adapter.names
        }
        best = {"plain": [float("inf")] * 2, "gated": [float("inf")] * 2}
        for _ in range(args.repeats):  # alternate, so a busy moment hits both alike
            for kind in ("plain", "gated"):
                hooks = gated(adapter, shifts, ScopeGate(0.8, keys)) if kind == "gated" else None
                with hooks or contextlib.nullcontext():
                    for i, fn in enumerate((prefill, decode_step)):
                        best[kind][i] = min(best[kind][i], timed(fn, 1))
        row = {
            "keys_per_module": r,
            "prefill_ratio": best["gated"][0] / best["plain"][0],
            "decode_step_ratio": best["gated"][1] / best["plain"][1],
            "prefill_ms": best["gated"][0] * 1e3,
            "decode_step_ms": best["gated"][1] * 1e3,
            "plain_prefill_ms": best["plain"][0] * 1e3,
            "plain_decode_step_ms": best["plain"][1] * 1e3,
        }
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
