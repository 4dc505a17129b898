"""A scope gate: an edit's weight change acts only at tokens whose key is near an edit's.

MALMEN's update S is linear, so it acts on every key: S·k for a key the edits were never
solved at is what the preservation prior keeps small but cannot keep zero, and at N = 16 it
is most of the locality loss (docs/results.md, twenty-seventh session).  A gate (the idea of
GRACE's deferral radius, Hartvigsen et al. 2023) applies a module's change at a token only
where the token's key — the module's input there — lies within cosine `threshold` of one of
the keys the edits were solved at:

    y = W k + [max_j cos(k, k_j) ≥ threshold] · S k

so a prompt that never comes near an edited subject runs exactly as the unedited model, and
the edit's own subject in another sentence (its paraphrases) still gets it.  The price: a
gated change is not a weight matrix.  It lives in forward hooks on the edited modules
(`Gate`), and a saved version of it is its shifts and keys, not new weights.

The keys kept are those of the rows that ask for a change (non-zero value): an editor's
zero-value rows (anchors, pins) hold places still and are not edits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from editor_core.adapters import ModelAdapter

GateMode = Literal["each", "sticky", "first"]


@dataclass
class ScopeGate:
    """Per edited module, the unit keys (R, d_in) the edits were solved at, and the cosine
    a token's key must reach to one of them for the module's change to act there."""

    threshold: float
    keys: dict[str, torch.Tensor]
    # How a token's decisions at the edited layers combine, lowest layer first: "each"
    # (every module decides on its own key), "sticky" (once a token is near an edit at one
    # layer, every higher edited layer's change acts there too: an edit's layers act
    # together), "first" (the lowest edited module decides for all: its keys are the
    # unedited model's).
    mode: GateMode = "each"

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"scope gate threshold {self.threshold} must be a cosine in [-1, 1]")
        if self.mode not in get_args(GateMode):
            raise ValueError(f"scope gate mode {self.mode!r}: one of {get_args(GateMode)}")

    @classmethod
    def of_rows(
        cls,
        threshold: float,
        rows: Mapping[str, Any],
        mode: GateMode = "each",
        contexts: bool = True,
    ) -> ScopeGate:
        """From an editor's rows (`EditRows` per module: keys, values): the keys of the rows
        with a non-zero value and, where the rows carry them, the keys each edit was seen at
        before a row averaged them (`EditRows.context_keys`: each context and paraphrase;
        `contexts` False: the rows' keys alone), normalised."""
        keys = {}
        for name, r in rows.items():
            k, v = r.keys, r.values
            asks = v.float().abs().amax(-1) > 0
            k = k[asks].float()
            if contexts and getattr(r, "context_keys", None) is not None:
                k = torch.cat([k, r.context_keys.float().to(k.device)])
            keys[name] = F.normalize(k, dim=-1).cpu().contiguous()
        return cls(threshold, keys, mode)

    def near(self, name: str, u: torch.Tensor) -> torch.Tensor:
        """(..., 1) float mask: 1 where the key u (..., d_in) is within the threshold of one
        of module `name`'s edit keys."""
        keys = self.keys[name]
        if keys.shape[0] == 0:
            return torch.zeros(*u.shape[:-1], 1, device=u.device)
        cos = F.normalize(u.float(), dim=-1) @ keys.to(u.device).T  # (..., R)
        return (cos.amax(-1, keepdim=True) >= self.threshold).float()


class Gate:
    """Forward hooks on the edited modules that add a gated change `S k` to each module's
    output: installed once, its shifts and gate swapped between forward passes (`set`,
    `clear`) — the serving engine's way of switching between gated versions.  With nothing
    set the hooks return the module's output untouched."""

    def __init__(self, adapter: ModelAdapter):
        self.adapter = adapter
        self.shifts: dict[str, torch.Tensor] = {}
        self.gate: ScopeGate | None = None
        self._lowest = adapter.names[0]
        self._open: torch.Tensor | None = None  # this forward's decisions so far (modes)
        self._handles = [
            adapter.module(name).register_forward_hook(self._hook(name)) for name in adapter.names
        ]

    def _hook(self, name: str):
        def hook(_m: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            shift = self.shifts.get(name)
            if shift is None or self.gate is None:
                return output
            u = args[0].float()
            mode = self.gate.mode
            if mode == "first" and name != self._lowest and self._open is not None:
                near = self._open
            else:
                near = self.gate.near(name, u)
                if mode == "sticky" and name != self._lowest and self._open is not None:
                    near = torch.maximum(near, self._open)
            self._open = near  # the lowest module's hook runs first in every forward
            if not bool(near.any()):  # most tokens: no change acts, no product to form
                return output
            return output + ((u @ shift.to(u.device)) * near).to(output.dtype)

        return hook

    def set(self, shifts: dict[str, torch.Tensor], gate: ScopeGate) -> None:
        missing = set(shifts) - set(gate.keys)
        if missing:
            raise KeyError(f"no gate keys for {sorted(missing)}")
        self.shifts = {n: s.float() for n, s in shifts.items()}
        self.gate = gate

    def clear(self) -> None:
        self.shifts, self.gate = {}, None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def gated(
    adapter: ModelAdapter, shifts: dict[str, torch.Tensor], gate: ScopeGate
) -> Iterator[None]:
    """Forward with `shifts` acting through `gate` (the weights are not touched)."""
    hooks = Gate(adapter)
    try:
        hooks.set(shifts, gate)
        yield
    finally:
        hooks.remove()
