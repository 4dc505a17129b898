"""Protected prompts: a deployment's own list of prompts whose answers no edit may change.

A protected prompt is read with its continuation — its answer when the list gives one,
else the unedited model's greedy continuation — and every token's key at every edited
module can join a solve as a zero-value row of weight w: the solve is then asked to give
those keys no shift (S·k ≈ 0), so the prompt's hidden states, and with them its answer,
stay.  Zero-value rows add to KᵀK and nothing to KᵀD, so a set of held prompts is one
(d_in, d_in) Gram matrix per module, w·Σ k kᵀ, added to the preservation prior
(`MalmenEditor.priors`).  It belongs to no edit: joint mode holds it in every version
whatever is withdrawn, and every solve path — the hyper-network's, the value-optimising
editor's spread over layers, the joint ledger, a sequential batch — takes it unchanged.

Which prompts a solve holds (`EditorConfig.protect_rounds`):

- rounds 0: all of them, always.  Told which neighbour prompts to hold, the solve holds
  them without giving up an edit (docs/results.md, twenty-third session: 16 scored
  neighbours, N = 16 LS_nb 0.832 → 0.998, ES unchanged) — but 329 protected prompts held at
  once leave a subject-keyed edit no direction to move in (twenty-fourth session: ES 0.99
  → 0.13 at weight 1000, 0.20 at 30): their keys at other names' tokens span the space
  an edited name's key lives in.
- rounds k > 0: only those an edit would change.  The solve runs holding none; the
  protected prompts whose answer its shifts change (scored against the unedited model's
  answers, `changed_prompts`) are held in the next solve, and so on for up to k rounds —
  a few prompts per batch rather than the whole list, as in the oracle.  Each round costs
  one pass over the protected prompts and one solve (for the value-optimising editor, one
  spread; the residual targets do not change).

Keys are read on the weights the model holds when the solve runs (the base weights in
joint mode and in evaluation), answers are always the unedited model's (`protect`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from editor_core.adapters import ModelAdapter
from editor_core.data.formats import LocalityPrompt
from editor_core.encoding import EditRequest
from editor_core.hooks import iter_keys
from editor_core.progress import bar

if TYPE_CHECKING:
    from editor_core.evaluate import LocalitySet

# The weight of a protected row relative to an edit's (1): high enough that the solve keeps
# the held keys' outputs to a small fraction of an edit's shift (validation, 23rd session:
# weight 1000 kept 99.8 % of the pinned neighbours' tokens at N = 16).
DEFAULT_WEIGHT = 1000.0
DEFAULT_ROUNDS = 3
# In rounds, a prompt is held when a solve changes an answer token the unedited model was
# at least this sure of (nats over its runner-up; evaluate.SURE_MARGIN): near-ties, which
# any weight change can flip, are left alone — held, they took ES 0.99 → 0.55 (validation
# N = 16, twenty-fourth session: 112 prompts held instead of 5).
DEFAULT_MARGIN = 1.0
GREEDY_TOKENS = 4  # tokens of the model's own continuation held for an answer-less prompt


@dataclass
class ProtectedSet:
    """A list of protected prompts: what is held (`texts`) and the unedited model's answers
    (`record`, scored by `changed_prompts`)."""

    prompts: list[LocalityPrompt]
    texts: list[EditRequest]  # each prompt with the continuation held
    record: LocalitySet  # prepared on the unedited model
    sha256: str  # of the texts (`texts_sha256`)

    def __len__(self) -> int:
        return len(self.texts)


def texts_sha256(texts: Sequence[EditRequest]) -> str:
    """A digest of what is held: each prompt with its continuation, in order."""
    blob = json.dumps([[t.prompt, t.target] for t in texts], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@torch.no_grad()
def protected_set(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[LocalityPrompt],
    batch_size: int = 32,
    adapter: ModelAdapter | None = None,
    reuse: ProtectedSet | None = None,
) -> ProtectedSet:
    """Tokenise `prompts`, record the model's answers (call on the unedited weights) and the
    continuation to hold for each: its answer, or the model's own `GREEDY_TOKENS` tokens.
    With the `adapter` of the editor that will hold them, each prompt also keeps the
    states entering its lowest edited block, and every later check of the set scores
    from there (`editor_core.resume`).  `reuse`: a set read from the same unedited weights
    (the caller vouches for that): its prompts are taken from it, not read again — a list
    that grows by a few prompts costs those few."""
    old = _reusable(reuse, model, adapter)
    fresh = [p for p in prompts if _key(p) not in old]
    from editor_core.evaluate import prepare_locality  # evaluate imports the editor

    record = prepare_locality(model, tokenizer, fresh, GREEDY_TOKENS, batch_size, adapter)
    if old:  # the fresh prompts, then the reused set's, put back in the list's order
        assert reuse is not None
        at = {_key(p): i for i, p in enumerate(fresh)}
        order = [at[k] if k in at else len(fresh) + old[k] for k in map(_key, prompts)]
        record = record.concat(reuse.record).subset(order)
    texts = [
        EditRequest(p.prompt, p.answer or tokenizer.decode(seq[start + 1 :]).strip())
        for p, seq, start in zip(prompts, record.sequences, record.start, strict=True)
    ]
    return ProtectedSet(list(prompts), texts, record, texts_sha256(texts))


def _key(p: LocalityPrompt) -> tuple[str, str | None]:
    return p.prompt, p.answer


def _reusable(
    reuse: ProtectedSet | None, model: torch.nn.Module, adapter: ModelAdapter | None
) -> dict[tuple[str, str | None], int]:
    """Where each prompt of `reuse` sits, if its states can join new ones (or it has none
    and none are wanted); {} otherwise."""
    if reuse is None:
        return {}
    resume = reuse.record.resume
    if adapter is None:
        ok = resume is None
    else:
        ok = resume is not None and resume.usable(model) and resume.layer == adapter.lowest_layer
    return {_key(p): i for i, p in enumerate(reuse.prompts)} if ok else {}


@torch.no_grad()
def held_gram(
    adapter: ModelAdapter,
    tokenizer: Any,
    texts: Sequence[EditRequest],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Σ k kᵀ at every token of `texts` (prompt and continuation) per edited module, on the
    weights the model holds now; accumulated in float64, returned in float32 on the
    model's device."""
    grams = {m.name: torch.zeros(m.d_in, m.d_in, dtype=torch.float64) for m in adapter.modules}
    batches = iter_keys(adapter, tokenizer, texts, batch_size, max_length, all_positions=True)
    total = -(-len(texts) // batch_size)
    for _owner, keys in bar(batches, progress=progress, total=total, desc="protect", unit="batch"):
        for name, k in keys.items():
            k64 = k.double()  # (n_b, d_in)
            grams[name] += (k64.T @ k64).cpu()
    device = next(adapter.model.parameters()).device
    return {n: g.float().to(device) for n, g in grams.items()}
