"""Protected prompts: a deployment's own list of prompts whose answers no edit may change.

Each protected prompt is read with its continuation — its answer when the list gives one,
else the unedited model's greedy continuation — and every token's key at every edited
module joins each solve as a zero-value row of weight w: the solve is asked to give those
keys no shift (S·k ≈ 0), so the prompt's hidden states, and with them its answer, stay.

Zero-value rows add to KᵀK and nothing to KᵀD, so the whole list is one (d_in, d_in) Gram
matrix per module, w·Σ k kᵀ, added to the preservation prior (`MalmenEditor.priors`).  It
belongs to no edit: joint mode keeps it in every version whatever is withdrawn, and every
solve path — the hyper-network's, the value-optimising editor's spread over layers, the
joint ledger, a sequential batch — takes it unchanged.  The keys are read once, on the
weights the model holds when `protect` is called (the base weights); a sequential-mode
version solved against edited parent weights sees them as they were then.

Why: told which neighbour prompts to hold, the solve holds them without giving up an edit
(docs/results.md, twenty-third session: N = 16 LS_nb 0.832 → 0.998, ES unchanged); what it
cannot do is guess those prompts.  A deployment often knows them — the facts its users ask
about — and this is how it says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from editor_core.adapters import ModelAdapter
from editor_core.data.formats import LocalityPrompt
from editor_core.encoding import EditRequest
from editor_core.hooks import iter_keys
from editor_core.progress import bar

# The weight of a protected row relative to an edit's (1): high enough that the solve keeps
# the protected keys' outputs to a small fraction of an edit's shift (validation, 23rd
# session: weight 1000 kept 99.8 % of the pinned neighbours' tokens at N = 16).
DEFAULT_WEIGHT = 1000.0
GREEDY_TOKENS = 4  # tokens of the model's own continuation held for an answer-less prompt


@dataclass(frozen=True)
class ProtectedSet:
    """The keys of a list of protected prompts, as one Gram matrix per edited module."""

    grams: dict[str, torch.Tensor]  # module -> Σ k kᵀ over every token (d_in, d_in), float32
    n_prompts: int
    n_rows: int  # tokens read (rows per module)
    sha256: str  # of the prompts and the continuations held (`texts_sha256`)

    def prior(self, name: str, weight: float) -> torch.Tensor:
        """weight · Σ k kᵀ of one module: the term the solve adds."""
        return weight * self.grams[name]


def texts_sha256(texts: Sequence[EditRequest]) -> str:
    """A digest of what is held: each prompt with its continuation, in order."""
    blob = json.dumps([[t.prompt, t.target] for t in texts], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@torch.no_grad()
def protected_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[LocalityPrompt],
    greedy: int = GREEDY_TOKENS,
    batch_size: int = 32,
) -> list[EditRequest]:
    """Each prompt with the continuation to hold: its answer, or the `greedy` tokens the model
    gives now (call on the weights to protect, the base weights)."""
    from editor_core.evaluate import greedy_tokens  # evaluate imports the editor

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    free = [i for i, p in enumerate(prompts) if not p.answer]
    found: dict[int, str] = {}
    for j in range(0, len(free), batch_size):
        idx = free[j : j + batch_size]
        ids = [
            list(tokenizer(prompts[i].prompt, add_special_tokens=True)["input_ids"]) for i in idx
        ]
        for i, toks in zip(idx, greedy_tokens(model, ids, greedy, pad), strict=True):
            found[i] = tokenizer.decode(toks).strip()
    return [
        EditRequest(p.prompt, p.answer if p.answer else found[i]) for i, p in enumerate(prompts)
    ]


@torch.no_grad()
def protected_set(
    adapter: ModelAdapter,
    tokenizer: Any,
    texts: Sequence[EditRequest],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
) -> ProtectedSet:
    """Σ k kᵀ at every token of `texts` (prompt and continuation) per edited module, on the
    weights the model holds now; accumulated in float64, kept in float32."""
    grams = {m.name: torch.zeros(m.d_in, m.d_in, dtype=torch.float64) for m in adapter.modules}
    rows = 0
    batches = iter_keys(adapter, tokenizer, texts, batch_size, max_length, all_positions=True)
    total = -(-len(texts) // batch_size)
    for owner, keys in bar(batches, progress=progress, total=total, desc="protect", unit="batch"):
        rows += int(owner.shape[0])
        for name, k in keys.items():
            k64 = k.double()  # (n_b, d_in)
            grams[name] += (k64.T @ k64).cpu()
    device = next(adapter.model.parameters()).device
    return ProtectedSet(
        {n: g.float().to(device) for n, g in grams.items()}, len(texts), rows, texts_sha256(texts)
    )
