"""`make bench`: edit-to-visible, generation and rollback latency through the service.

Starts `factpatch serve` (embedded Redis, a temporary data dir) on a free port with the
default model when `data/models/smollm2-135m-instruct` exists, else a tiny random model,
and prints a markdown table.  Generation through the service is compared with
`model.generate` on the same model in this process, in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import torch  # noqa: E402

from tests.service.conftest import Proc, base_env  # noqa: E402

log = logging.getLogger("bench")
DEFAULT_MODEL_DIR = ROOT / "data" / "models" / "smollm2-135m-instruct"
GEN_PROMPT = "The capital of France is"


def visible(c: httpx.Client, version: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.post("/generate", json={"prompt": "x", "max_new_tokens": 1})
        if r.status_code == 200 and r.json()["version"] == version:
            return
        time.sleep(0.02)
    raise TimeoutError(f"version {version} never became visible")


def edit_to_visible(c: httpx.Client, n: int, expect: int) -> float:
    edits = [
        {"prompt": f"The secret code of item {i} is", "target": f"code {i % 97}"} for i in range(n)
    ]
    t0 = time.perf_counter()
    r = c.post("/edits", json={"edits": edits})
    r.raise_for_status()
    visible(c, expect)
    return time.perf_counter() - t0


def service_generate(c: httpx.Client, tokens: int, reps: int) -> tuple[float, float]:
    times, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = c.post("/generate", json={"prompt": GEN_PROMPT, "max_new_tokens": tokens}).json()
        times.append(time.perf_counter() - t0)
        n += out["completion_tokens"]
    return statistics.median(times), n / sum(times)


def direct_generate(model_dir: Path, tokens: int, reps: int) -> tuple[float, float]:
    from editor_core.config import ModelSpec
    from editor_core.loading import load_model

    torch.set_num_threads(1)
    lm = load_model(ModelSpec(source=str(model_dir)))
    ids = lm.tokenizer(GEN_PROMPT, return_tensors="pt").input_ids
    times, n = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = lm.model.generate(
                ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        times.append(time.perf_counter() - t0)
        n += out.shape[1] - ids.shape[1]
    return statistics.median(times), n / sum(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--big", type=int, default=256, help="edits in the large request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="factpatch-bench-"))
    if DEFAULT_MODEL_DIR.joinpath("config.json").is_file():
        model_dir, label = DEFAULT_MODEL_DIR, "smollm2-135m-instruct"
    else:
        from tests.tiny import save_tiny

        model_dir, label = save_tiny(tmp / "tiny"), "tiny random llama"
    env = base_env(
        tmp / "data",
        model_dir,
        FACTPATCH_WORKER_LINGER_MS="20",
        FACTPATCH_MAX_NEW_TOKENS_CAP=str(max(args.tokens, 256)),
    )
    env.pop("FACTPATCH_EDITOR_CONFIG")
    server = Proc("serve", env, tmp / "serve.log").start()
    rows: list[tuple[str, str]] = []
    try:
        server.wait_ready(600)
        with httpx.Client(base_url=server.url, timeout=600) as c:
            rows.append(("edit → visible, 1 edit", f"{edit_to_visible(c, 1, 1):.2f} s"))
            rows.append(
                (
                    f"edit → visible, {args.big} edits in one request",
                    f"{edit_to_visible(c, args.big, 2):.2f} s",
                )
            )
            lat, tps = service_generate(c, args.tokens, args.reps)
            rows.append((f"/generate {args.tokens} tokens (median)", f"{lat * 1000:.0f} ms"))
            rows.append(("/generate tokens/s", f"{tps:.1f}"))
            t0 = time.perf_counter()
            c.post("/versions/0/rollback").raise_for_status()
            visible(c, 0)
            rows.append(("rollback → visible", f"{(time.perf_counter() - t0) * 1000:.0f} ms"))
    finally:
        server.stop()
    lat, tps = direct_generate(model_dir, args.tokens, args.reps)
    rows.append((f"model.generate {args.tokens} tokens (median, direct)", f"{lat * 1000:.0f} ms"))
    rows.append(("model.generate tokens/s (direct)", f"{tps:.1f}"))
    sys.stdout.write(f"\nfactpatch bench — {label}, CPU threads 1, {torch.__version__}\n\n")
    sys.stdout.write("| measure | value |\n|---|---|\n")
    for k, v in rows:
        sys.stdout.write(f"| {k} | {v} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
