"""Baselines measured through the same interface as MalmenEditor (MALMEN.md §4).

- MendEditor: the same hyper-network, S = Σ_j −η ũ_j g̃_jᵀ (rank-1 shifts summed, no
  least squares); edits the editor's `paraphrase_rows` paraphrases too, as MALMEN does.
- FTEditor: fine-tuning of a shift on the same modules (Adam, k steps), optionally kept
  inside a Frobenius-norm ball; `FTConfig.paraphrases`: trains on that many of each
  edit's paraphrases too.
Both return a `WeightDelta` and leave the model bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editor_core.adapters import ModelAdapter
from editor_core.editor import MalmenEditor, WeightDelta, target_loss_sum
from editor_core.encoding import EditRequest, encode_edits, paraphrase_edits
from editor_core.hooks import grad_from, shifted
from editor_core.progress import bar


class MendEditor:
    def __init__(self, editor: MalmenEditor):
        self.editor = editor

    def compute_delta(self, requests: Sequence[EditRequest], progress: bool = False) -> WeightDelta:
        ed = self.editor
        cached = ed.cache_edited(requests)
        shifts = {}
        c = ed.config.hyper_chunk
        with torch.no_grad():
            for name, rows in bar(cached.items(), desc="mend", leave=False, progress=progress):
                d_in, d_out = ed.adapter.shapes()[name]
                S = torch.zeros(d_in, d_out, device=rows.keys.device)  # (d_in, d_out)
                for i in range(0, rows.keys.shape[0], c):
                    pu, pg, eta = ed.nets.pseudo(name, rows.keys[i : i + c], rows.grads[i : i + c])
                    S -= eta * ed.config.eta_scale * (pu.T @ pg)  # Σ_j −η ũ_j g̃_jᵀ
                shifts[name] = S
        return WeightDelta(shifts=shifts)


@dataclass(frozen=True)
class FTConfig:
    steps: int = 25
    lr: float = 1e-3
    lm_batch_size: int = 32
    max_norm: float | None = None  # Frobenius bound on each module's shift
    paraphrases: int = 0  # each edit's first k paraphrases join the training examples


class FTEditor:
    def __init__(self, adapter: ModelAdapter, tokenizer: Any, config: FTConfig | None = None):
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.config = config or FTConfig()

    def compute_delta(self, requests: Sequence[EditRequest], progress: bool = False) -> WeightDelta:
        cfg, adapter = self.config, self.adapter
        device = next(adapter.model.parameters()).device
        shifts = {
            n: torch.zeros(s, device=device, requires_grad=True)
            for n, s in adapter.shapes().items()
        }
        opt = torch.optim.Adam(list(shifts.values()), lr=cfg.lr)
        requests = [*requests, *(q for q, _ in paraphrase_edits(requests, cfg.paraphrases))]
        batches = [
            encode_edits(self.tokenizer, requests[i : i + cfg.lm_batch_size]).to(device)
            for i in range(0, len(requests), cfg.lm_batch_size)
        ]
        n_tokens = sum(sum(b.target_lengths) for b in batches)
        steps = bar(range(cfg.steps), desc="ft", unit="step", leave=False, progress=progress)
        for _ in steps:
            grads = [torch.zeros_like(s) for s in shifts.values()]
            total = torch.zeros(())
            for b in batches:
                with shifted(adapter, shifts), grad_from(adapter):
                    logits = adapter.model(
                        input_ids=b.input_ids, attention_mask=b.attention_mask
                    ).logits
                    loss = target_loss_sum(logits, b.labels, b.predict_mask) / n_tokens
                if progress:
                    total = total + loss.detach()
                for acc, g in zip(
                    grads, torch.autograd.grad(loss, list(shifts.values())), strict=True
                ):
                    acc += g
            if progress:  # the only read of the loss: no device sync per batch otherwise
                steps.set_postfix(nll=f"{float(total):.3f}")
            for s, g in zip(shifts.values(), grads, strict=True):
                s.grad = g
            opt.step()
            if cfg.max_norm is not None:
                with torch.no_grad():
                    for s in shifts.values():
                        s.mul_(torch.clamp(cfg.max_norm / (s.norm() + 1e-12), max=1.0))
        return WeightDelta(shifts={n: s.detach() for n, s in shifts.items()})
