"""Checks that need a CUDA device (run on a lent GPU machine; see scripts/gpu_train.sh).

    python scripts/gpu_checks.py MODEL_DIR EDITOR_CKPT

1. The model loads on CUDA in bf16 (the serving default there) and knows "Paris".
2. An edit computed on CUDA lands; applying from float32 masters and restoring gives the
   bf16 weights back bit for bit; compute_delta leaves the model untouched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from editor_core import EditRequest, ModelSpec, load_model
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.editor import MalmenEditor


def greedy(loaded, prompt: str, n: int = 4) -> str:
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt").to(loaded.model.device)
    out = loaded.model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :])


def main(model_dir: str, ckpt: str) -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    loaded = load_model(ModelSpec(source=model_dir))  # auto: CUDA + bf16
    p = next(loaded.model.parameters())
    print("device", p.device, "dtype", p.dtype)
    assert p.device.type == "cuda" and p.dtype == torch.bfloat16
    base = greedy(loaded, "The capital of France is")
    print("base:", repr(base))
    assert base.startswith(" Paris"), base
    editor = MalmenEditor.from_checkpoint(Path(ckpt), loaded)
    before = {n: loaded.adapter.weight(n).detach().clone() for n in loaded.adapter.names}
    facts = [
        EditRequest("The capital of France is", "Rome"),
        EditRequest("The Eiffel Tower is located in the city of", "London"),
        EditRequest("The largest planet in the solar system is", "Mars"),
    ]
    torch.cuda.synchronize()
    t = time.perf_counter()
    delta = editor.compute_delta(facts)
    torch.cuda.synchronize()
    print(f"compute_delta(3) on CUDA: {time.perf_counter() - t:.3f} s")
    for n, w in before.items():
        assert torch.equal(loaded.adapter.weight(n), w), f"compute_delta changed {n}"
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, delta, masters)
    edited = greedy(loaded, "The capital of France is")
    print("edited:", repr(edited))
    restore(loaded.adapter, masters)
    for n, w in before.items():
        assert torch.equal(loaded.adapter.weight(n), w), f"restore is not bit-exact for {n}"
    assert greedy(loaded, "The capital of France is") == base
    print("GPU CHECKS PASSED (edited output above; restore bit-exact in bf16)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
