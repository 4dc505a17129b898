"""How far a scope gate (`hooks.gated`) can tell an edit's own prompts from its neighbours,
measured on the unedited model: at each edited layer, the cosine between a prompt's keys
and the edits' keys (each edit's key: its subject's last token in its own prompt), for

- the scored paraphrases of the edits (the gate must let them through: GS),
- the neighbourhood prompts whose subject ends in an edited subject's last token (shared),
- the other neighbourhood prompts (own),

each prompt's value being the largest cosine over its tokens and the edits.  `--pair`
adds the same with a two-token signature: a token is near an edit only when it and the
token before it are both near the edit's last two subject tokens (min of the two cosines).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/gate_geometry.py \\
        --editor editor_core/checkpoints/smollm2-135m-instruct-optimise \\
        --facts out/facts_ep5/val.jsonl --neighborhood data/facts/neighborhood_val.jsonl \\
        --n 16 --draws 8 --out out/gate_geometry.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editor_core.checkpoint import checkpoint_layers
from editor_core.config import ModelSpec
from editor_core.data import read_facts
from editor_core.data.formats import neighbour_subject
from editor_core.evaluate import last_token_sharing, sample_draws
from editor_core.loading import load_model


@torch.no_grad()
def keys_of(loaded: Any, text: str) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Token ids of `text` and every edited module's input at each of its tokens (L, d_in)."""
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids
    got: dict[str, torch.Tensor] = {}
    handles = []
    for name in loaded.adapter.names:

        def hook(_m: Any, args: tuple, _out: Any, name: str = name) -> None:
            got[name] = F.normalize(args[0][0].float(), dim=-1)

        handles.append(loaded.adapter.module(name).register_forward_hook(hook))
    try:
        loaded.model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return ids[0].tolist(), got


def subject_end(loaded: Any, prompt: str, subject: str) -> int:
    """Index of the subject's last token in the tokenised prompt."""
    start = prompt.index(subject) + len(subject)
    return len(loaded.tokenizer(prompt[:start]).input_ids) - 1


def quantiles(xs: list[float]) -> dict[str, float]:
    t = torch.tensor(xs)
    return {f"q{int(q * 100)}": float(t.quantile(q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--editor", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--facts", type=Path, required=True)
    p.add_argument("--neighborhood", type=Path, required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    loaded = load_model(
        ModelSpec(source=args.model, layers=checkpoint_layers(args.editor), dtype="float32"),
        args.data_dir,
    )
    names = loaded.adapter.names
    facts = read_facts(args.facts)
    groups: dict[str, dict[str, list[float]]] = {}

    def add(group: str, name: str, value: float) -> None:
        groups.setdefault(group, {}).setdefault(name, []).append(value)

    for chosen in sample_draws(facts, args.n, args.seed, args.draws):
        chosen = [f for f in chosen if f.subject and f.subject in f.prompt]
        last: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        prev: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for f in chosen:
            _, k = keys_of(loaded, f.prompt)
            end = subject_end(loaded, f.prompt, f.subject)
            for n in names:
                last[n].append(k[n][end])
                prev[n].append(k[n][max(end - 1, 0)])
        e_last = {n: torch.stack(v) for n, v in last.items()}  # (E, d_in)
        e_prev = {n: torch.stack(v) for n, v in prev.items()}
        _, shares = last_token_sharing(loaded.tokenizer, chosen)
        texts = [("paraphrase", t) for f in chosen for t in f.paraphrases]
        for f in chosen:
            for nb in f.neighborhood:
                if neighbour_subject(f, nb.prompt) is not None:
                    kind = "shared" if shares.get(nb.prompt) else "own"
                    texts.append((kind, nb.prompt))
        for kind, text in texts:
            _, k = keys_of(loaded, text)
            for n in names:
                cos = k[n] @ e_last[n].T  # (L, E)
                add(kind, n, float(cos.max()))
                pair = torch.minimum(cos[1:], k[n][:-1] @ e_prev[n].T)  # (L-1, E)
                add(f"{kind} pair", n, float(pair.max()) if pair.numel() else 0.0)
    out = {
        g: {n: {"count": len(v), **quantiles(v)} for n, v in d.items()} for g, d in groups.items()
    }
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    for g, d in out.items():
        print(g)
        for n, q in d.items():
            print(
                f"  {n:32s} n={q['count']:4d}",
                " ".join(f"{k}={v:.3f}" for k, v in q.items() if k != "count"),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
