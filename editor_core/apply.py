"""The only code that writes model weights.

Weights are always set from float32 masters: `W = from_rows(master + S)` cast to the model
dtype and copied in place.  An edit is never undone by subtraction (half-precision
add/subtract loses small shifts and does not round-trip); `restore` copies the masters back.
A gated change (editor_core/gate.py) is not written into the weights: it is installed as the
adapter's gate hooks, beside them, and `restore` clears it.
"""

from __future__ import annotations

from typing import get_args
from weakref import WeakKeyDictionary

import torch

from editor_core.adapters import ModelAdapter
from editor_core.editor import WeightDelta
from editor_core.gate import Gate, GateMode, ScopeGate


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
    gate = shifts.gate if isinstance(shifts, WeightDelta) else None
    out = {}
    for name, shift in _shifts(shifts).items():
        if name not in masters:
            raise KeyError(f"no master weight for {name}")
        stored = adapter.weight(name)
        rows = masters[name].to(stored.device)
        if gate is None:  # a gated change stays out of the weights
            rows = rows + shift.to(stored.device, torch.float32)
        out[name] = adapter.from_rows(rows).to(stored.dtype).contiguous()  # stored layout
    if gate is not None:
        out.update(gate_tensors(_shifts(shifts), gate))
    return out


# A gated change (editor_core/gate.py) is saved beside the weights it leaves alone, as
# "<module>::gate.shift" (d_in, d_out) and "<module>::gate.keys" (R, d_in), float32,
# "::gate.threshold" (1,) and "::gate.mode" (1,), the index of its GateMode: a version's
# tensors are then still one flat dict.
GATE_MARK = "::gate."


def gate_tensors(shifts: dict[str, torch.Tensor], gate: ScopeGate) -> dict[str, torch.Tensor]:
    out = {
        GATE_MARK + "threshold": torch.tensor([gate.threshold], dtype=torch.float32),
        GATE_MARK + "mode": torch.tensor([get_args(GateMode).index(gate.mode)]),
    }
    for name, shift in shifts.items():
        out[f"{name}{GATE_MARK}shift"] = shift.detach().float().cpu().contiguous()
        out[f"{name}{GATE_MARK}keys"] = gate.keys[name].float().cpu().contiguous()
    return out


def split_gate(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], ScopeGate | None]:
    """(weights, gate shifts, gate) of a version's tensors; (weights, {}, None) for a plain
    one."""
    weights = {n: t for n, t in tensors.items() if GATE_MARK not in n}
    threshold = tensors.get(GATE_MARK + "threshold")
    if threshold is None:
        return weights, {}, None
    names = [
        n.removesuffix(f"{GATE_MARK}shift") for n in tensors if n.endswith(f"{GATE_MARK}shift")
    ]
    shifts = {n: tensors[f"{n}{GATE_MARK}shift"] for n in names}
    keys = {n: tensors[f"{n}{GATE_MARK}keys"] for n in names}
    mode = get_args(GateMode)[int(tensors.get(GATE_MARK + "mode", torch.tensor([0]))[0])]
    return weights, shifts, ScopeGate(float(threshold[0]), keys, mode)


_GATES: WeakKeyDictionary[ModelAdapter, Gate] = WeakKeyDictionary()


@torch.no_grad()
def install_weights(adapter: ModelAdapter, tensors: dict[str, torch.Tensor]) -> None:
    """Copy stored-layout tensors (e.g. a saved version's) into the edited modules, and set
    or clear the adapter's gate hooks (`Gate`, made at the first gated version) by whether
    they hold a gated change (`split_gate`).

    A copy, never arithmetic: installing the same tensors always gives the same bits."""
    weights, shifts, gate = split_gate(tensors)
    for name, t in weights.items():
        w = adapter.weight(name)
        w.copy_(t.to(device=w.device, dtype=w.dtype))
    hooks = _GATES.get(adapter)
    if gate is not None:
        if hooks is None:
            hooks = _GATES[adapter] = Gate(adapter)
        hooks.set(shifts, gate)
    elif hooks is not None:
        hooks.clear()


@torch.no_grad()
def apply_delta(
    adapter: ModelAdapter,
    delta_or_shifts: WeightDelta | dict[str, torch.Tensor],
    masters: dict[str, torch.Tensor],
) -> None:
    """W = from_rows(master + S), cast to the model dtype, written in place; a gated delta
    (`WeightDelta.gate`) leaves W = master and acts through the adapter's gate hooks."""
    install_weights(adapter, new_weights(adapter, delta_or_shifts, masters))


@torch.no_grad()
def restore(adapter: ModelAdapter, masters: dict[str, torch.Tensor]) -> None:
    """Copy the masters back (bit-exact for float32 models and for masters taken from a
    lower-precision model, since float32 represents bf16/fp16 exactly)."""
    for name, rows in masters.items():
        w = adapter.weight(name)
        w.copy_(adapter.from_rows(rows.to(w.device)).to(w.dtype))
    hooks = _GATES.get(adapter)
    if hooks is not None:  # and no gated change acts any more
        hooks.clear()
