"""Teacher-forced token metrics (MALMEN.md §4): ES/GS token accuracy, LS argmax agreement.

Callers choose the weights: wrap calls in `hooks.shifted(...)` or apply a delta first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editor_core.encoding import EditRequest, encode_edits


@dataclass
class LocalityBatch:
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, L) bool, positions whose predictions are compared


def encode_locality(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[str | None] | None = None
) -> LocalityBatch:
    """Locality positions: those predicting the answer when one is given, else every
    position of the prompt (each predicts the next token)."""
    answers = list(answers) if answers is not None else [None] * len(prompts)
    if all(a for a in answers):
        b = encode_edits(
            tokenizer, [EditRequest(p, a or "") for p, a in zip(prompts, answers, strict=True)]
        )
        return LocalityBatch(b.input_ids, b.attention_mask, b.predict_mask)
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    attn = enc["attention_mask"]
    return LocalityBatch(enc["input_ids"], attn, attn.bool())


@torch.no_grad()
def token_accuracy(
    model: torch.nn.Module, tokenizer: Any, requests: Sequence[EditRequest], batch_size: int = 32
) -> list[float]:
    """Per request: fraction of target tokens that are the argmax at their position."""
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(requests), batch_size):
        batch = encode_edits(tokenizer, requests[i : i + batch_size]).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        hit = (logits.argmax(-1) == batch.labels) & batch.predict_mask  # (B, L)
        n = batch.predict_mask.sum(-1).clamp(min=1)
        out.extend((hit.sum(-1).float() / n).tolist())
    return out


@torch.no_grad()
def locality_argmax(model: torch.nn.Module, batch: LocalityBatch) -> torch.Tensor:
    """Argmax token at the compared positions, (m,) long."""
    device = next(model.parameters()).device
    logits = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
    ).logits
    return logits.argmax(-1)[batch.mask.to(device)]


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of positions where two argmax sequences agree."""
    return float((a == b).float().mean()) if a.numel() else 1.0
