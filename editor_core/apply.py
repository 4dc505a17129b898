"""The only code that writes model weights.

Weights are always set from float32 masters: `W = from_rows(master + S)` cast to the model
dtype and copied in place.  An edit is never undone by subtraction (half-precision
add/subtract loses small shifts and does not round-trip); `restore` copies the masters back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from editor_core.adapters import ModelAdapter
from editor_core.editor import WeightDelta
from editor_core.gate import gated


def snapshot(adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    """float32 masters of the edited modules, row convention (d_in, d_out), cloned."""
    return {name: adapter.weight_rows(name) for name in adapter.names}


def _shifts(delta_or_shifts: WeightDelta | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(delta_or_shifts, WeightDelta):
        return delta_or_shifts.shifts
    return delta_or_shifts


def new_weights(
    adapter: ModelAdapter,
    shifts: WeightDelta | dict[str, torch.Tensor],
    masters: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Stored-layout tensors in the model dtype, for every module in `shifts`; the model
    is not touched."""
    out = {}
    for name, shift in _shifts(shifts).items():
        if name not in masters:
            raise KeyError(f"no master weight for {name}")
        stored = adapter.weight(name)
        rows = masters[name].to(stored.device) + shift.to(stored.device, torch.float32)
        out[name] = adapter.from_rows(rows).to(stored.dtype).contiguous()  # stored layout
    return out


@torch.no_grad()
def install_weights(adapter: ModelAdapter, tensors: dict[str, torch.Tensor]) -> None:
    """Copy stored-layout tensors (e.g. a saved version's) into the edited modules.

    A copy, never arithmetic: installing the same tensors always gives the same bits."""
    for name, t in tensors.items():
        w = adapter.weight(name)
        w.copy_(t.to(device=w.device, dtype=w.dtype))


@torch.no_grad()
def apply_delta(
    adapter: ModelAdapter,
    delta_or_shifts: WeightDelta | dict[str, torch.Tensor],
    masters: dict[str, torch.Tensor],
) -> None:
    """W = from_rows(master + S), cast to the model dtype, written in place."""
    for name, weight in new_weights(adapter, delta_or_shifts, masters).items():
        adapter.weight(name).copy_(weight)


@torch.no_grad()
def restore(adapter: ModelAdapter, masters: dict[str, torch.Tensor]) -> None:
    """Copy the masters back (bit-exact for float32 models and for masters taken from a
    lower-precision model, since float32 represents bf16/fp16 exactly)."""
    for name, rows in masters.items():
        w = adapter.weight(name)
        w.copy_(adapter.from_rows(rows.to(w.device)).to(w.dtype))


@contextmanager
def applied(
    adapter: ModelAdapter, delta: WeightDelta, masters: dict[str, torch.Tensor]
) -> Iterator[None]:
    """The model with `delta` in force inside the block, as it was after: a plain delta is
    written as weights (`apply_delta`) and the masters restored; a gated one
    (`WeightDelta.gate`, editor_core/gate.py) acts through forward hooks, weights untouched."""
    if delta.gate is not None:
        with gated(adapter, delta.shifts, delta.gate):
            yield
        return
    try:
        apply_delta(adapter, delta, masters)
        yield
    finally:
        restore(adapter, masters)
