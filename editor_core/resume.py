"""Scoring that starts at the lowest edited block.

An edit changes matrices in blocks `adapter.layers` only, so on any edited model the hidden
states entering the lowest edited block are those of the unedited model.  A prompt scored
again and again against new weights — a protected prompt, once per solve round and once
per version — can keep those states from its first pass and run only the blocks from there
on: the hyper-network editor edits blocks 24–29 of SmolLM2's 30, and a scoring pass costs
about a fifth of a full one.

It is exact, not an approximation: the states are the unedited model's, fed back as
`inputs_embeds` to the model with its block list cut to the blocks from `layer` on, and the
cut model's logits are checked against a full pass when the states are taken (an
architecture whose forward treats `inputs_embeds` as more than the first block's input —
scaled embeddings, added position embeddings — fails the check and keeps full passes).
Every parameter outside those blocks is fingerprinted by its storage and in-place version
counter; if any was written since (another editor's layers, loaded weights), `usable` says
no and the caller runs full passes.  (A write through `param.data` bumps no counter: the
library never writes that way, and code that does must not share a protected set.)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import nn

from editor_core.adapters import ModelAdapter, get_submodule

log = logging.getLogger(__name__)

# |Δ logit| allowed between the cut and the full pass, relative to the largest |logit|
# (the same operations on the same inputs: 0 or rounding): an architecture that changes
# `inputs_embeds` on the way in is off by O(1)
CHECK_RTOL = 1e-3


@dataclass
class Resume:
    """The hidden states entering block `layer` for each scored sequence, and the versions of
    every parameter that produced them."""

    layers_path: str
    layer: int
    hidden: list[torch.Tensor]  # (len(sequence) - 1, d) per sequence, on the model's device
    frozen: tuple[tuple[int, int, int], ...]  # (id, data_ptr, _version) of every other parameter

    def subset(self, idx: Sequence[int]) -> Resume:
        return Resume(self.layers_path, self.layer, [self.hidden[i] for i in idx], self.frozen)

    def concat(self, other: Resume) -> Resume | None:
        """Both sets of states, when they were taken at the same block from the same
        weights; None otherwise."""
        same = (self.layers_path, self.layer, self.frozen) == (
            other.layers_path,
            other.layer,
            other.frozen,
        )
        return replace(self, hidden=self.hidden + other.hidden) if same else None

    def usable(self, model: nn.Module) -> bool:
        """True while no parameter below `layer` has been written since the states were
        taken."""
        return _frozen(model, self.layers_path, self.layer) == self.frozen


def _frozen(model: nn.Module, layers_path: str, layer: int) -> tuple[tuple[int, int, int], ...]:
    upper = {id(p) for block in _blocks(model, layers_path)[layer:] for p in block.parameters()}
    return tuple(
        (id(p), p.data_ptr(), p._version) for p in model.parameters() if id(p) not in upper
    )


def _blocks(model: nn.Module, layers_path: str) -> list[nn.Module]:
    return list(cast(nn.ModuleList, get_submodule(model, layers_path)))


@contextmanager
def _cut(model: nn.Module, layers_path: str, layer: int) -> Iterator[None]:
    """The model with its block list cut to the blocks from `layer` on."""
    parent_path, _, attr = layers_path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(_blocks(model, layers_path)[layer:]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


def positions(starts: Sequence[int], ends: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """The scored positions start..end-1 of each row as a (B, K) index (short rows repeat
    their last position) and each row's count."""
    counts = [e - s for s, e in zip(starts, ends, strict=True)]
    width = max(counts)
    keep = torch.tensor(
        [[min(s + j, e - 1) for j in range(width)] for s, e in zip(starts, ends, strict=True)]
    )
    return keep, counts


def logits_at_positions(
    model: nn.Module, keep: torch.Tensor, device: torch.device, **inputs: torch.Tensor
) -> torch.Tensor:
    """Logits (B, K, V) at `keep` (B, K) only: the vocabulary projection is most of a short
    pass.  Without a KV cache where the model takes `use_cache`."""
    accepts = _forward_parameters(type(model))
    if "use_cache" in accepts:
        inputs["use_cache"] = False  # type: ignore[assignment]
    if "logits_to_keep" in accepts:
        return model(**inputs, logits_to_keep=keep.to(device)).logits
    logits = model(**inputs).logits  # (B, W, V)
    return logits.gather(1, keep.to(device)[..., None].expand(-1, -1, logits.shape[-1]))


_FORWARD_PARAMETERS: dict[type[nn.Module], frozenset[str]] = {}


def _forward_parameters(cls: type[nn.Module]) -> frozenset[str]:
    """The keyword names a model class's forward takes (read once per class: greedy
    decoding asks at every token)."""
    if cls not in _FORWARD_PARAMETERS:
        _FORWARD_PARAMETERS[cls] = frozenset(inspect.signature(cls.forward).parameters)
    return _FORWARD_PARAMETERS[cls]


def full_logits(
    model: nn.Module, seqs: Sequence[Sequence[int]], pad: int, keep: torch.Tensor
) -> torch.Tensor:
    """Logits (B, K, V) of right-padded `seqs` at the positions `keep` (B, K): a full pass."""
    device = next(model.parameters()).device
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)  # (B, W)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
    return logits_at_positions(
        model, keep, device, input_ids=ids.to(device), attention_mask=mask.to(device)
    )


def resumed_logits(
    model: nn.Module, resume: Resume, idx: Sequence[int], keep: torch.Tensor
) -> torch.Tensor:
    """Logits (B, K, V) of the sequences `idx` at `keep`, from their stored states on."""
    hidden = [resume.hidden[i] for i in idx]
    width = max(h.shape[0] for h in hidden)
    x = hidden[0].new_zeros(len(hidden), width, hidden[0].shape[-1])  # (B, W, d)
    mask = torch.zeros(len(hidden), width, dtype=torch.long, device=x.device)
    for b, h in enumerate(hidden):
        x[b, : h.shape[0]] = h
        mask[b, : h.shape[0]] = 1
    with _cut(model, resume.layers_path, resume.layer):
        return logits_at_positions(model, keep, x.device, inputs_embeds=x, attention_mask=mask)


@torch.no_grad()
def scored_pass(
    model: nn.Module,
    adapter: ModelAdapter | None,
    sequences: Sequence[Sequence[int]],
    starts: Sequence[int],
    pad: int,
    batch_size: int,
    on_logits: Callable[[torch.Tensor], None],
) -> Resume | None:
    """One full pass over `sequences` (all but the last token fed), handing `on_logits` the
    float logits (k, V) at each sequence's scored positions (from `starts`), in order.  With
    the `adapter` of an editor whose lowest edited block is not the first, it also keeps the
    states entering that block and returns them — None where the cut pass does not
    reproduce the full one."""
    layer = adapter.lowest_layer if adapter is not None else 0
    path = adapter.arch.layers_path if adapter is not None else ""
    caught: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        caught.append(args[0] if args else kwargs["hidden_states"])

    hidden: list[torch.Tensor] = []
    first: tuple[torch.Tensor, torch.Tensor, list[int]] | None = None
    handle = (
        _blocks(model, path)[layer].register_forward_pre_hook(grab, with_kwargs=True)
        if layer
        else None
    )
    try:
        for i in range(0, len(sequences), batch_size):
            seqs = [s[:-1] for s in sequences[i : i + batch_size]]
            keep, counts = positions(starts[i : i + batch_size], [len(s) for s in seqs])
            caught.clear()
            logits = full_logits(model, seqs, pad, keep)
            for b, k in enumerate(counts):
                on_logits(logits[b, :k].float())
            if handle is not None:
                hidden += [caught[0][b, : len(s)].clone() for b, s in enumerate(seqs)]
                if first is None:
                    first = (logits, keep, counts)
    finally:
        if handle is not None:
            handle.remove()
    if first is None:
        return None
    resume = Resume(path, layer, hidden, _frozen(model, path, layer))
    logits, keep, counts = first
    again = resumed_logits(model, resume, range(len(counts)), keep)
    err = max(float((logits[b, :k] - again[b, :k]).abs().max()) for b, k in enumerate(counts))
    scale = float(logits.abs().max())
    if err > CHECK_RTOL * scale:
        log.info(
            "scoring from block %d does not reproduce a full pass on %s (|Δ logit| %.3g of "
            "%.3g): full passes",
            layer,
            type(model).__name__,
            err,
            scale,
        )
        return None
    return resume
