"""ModelAdapter: the edited modules of one model, in one row convention.

MALMEN's row convention (MALMEN.md §1): keys are rows `u ∈ R^{d_in}`, a shift is
`S ∈ R^{d_in × d_out}` and the module computes `v = u W_rows` with `W_rows` of shape
(d_in, d_out).  nn.Linear stores `weight` as (d_out, d_in), so `W_rows = weightᵀ`;
HF's GPT-2 Conv1D stores (d_in, d_out), so `W_rows = weight`.  Everything outside this
file works in the row convention; only `to_rows` / `from_rows` know the storage layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from editor_core.config import DEFAULT_EDIT_LAST_N_LAYERS, ArchSpec


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """`model.get_submodule` with a clear error naming the missing path."""
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise ValueError(f"module {path!r} not found in {type(model).__name__}") from exc


@dataclass(frozen=True)
class EditedModule:
    name: str  # full dotted path, e.g. "model.layers.29.mlp.down_proj"
    layer: int  # transformer block index
    d_in: int
    d_out: int


class ModelAdapter:
    """Knows where the edited matrices are and how their weights are laid out."""

    def __init__(self, model: nn.Module, arch: ArchSpec, layers: tuple[int, ...] | None = None):
        self.model = model
        self.arch = arch
        blocks = get_submodule(model, arch.layers_path)
        if not isinstance(blocks, nn.ModuleList):
            raise ValueError(f"{arch.layers_path!r} is not a list of blocks")
        self.num_layers = len(blocks)
        if layers is None:
            n = min(DEFAULT_EDIT_LAST_N_LAYERS, self.num_layers)
            layers = tuple(range(self.num_layers - n, self.num_layers))
        bad = [i for i in layers if not 0 <= i < self.num_layers]
        if bad or not layers:
            raise ValueError(f"edited layers {layers} out of range 0..{self.num_layers - 1}")
        self.layers = tuple(sorted(set(layers)))
        self.modules: list[EditedModule] = []
        for i in self.layers:
            name = arch.module_template.format(i)
            w = self.weight(name)
            if w.dim() != 2:
                raise ValueError(f"{name} weight has shape {tuple(w.shape)}; expected a matrix")
            d_in, d_out = self.to_rows(w).shape
            self.modules.append(EditedModule(name, i, d_in, d_out))

    # -- lookup ---------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    @property
    def lowest_layer(self) -> int:
        return self.layers[0]

    def module(self, name: str) -> nn.Module:
        return get_submodule(self.model, name)

    def weight(self, name: str) -> nn.Parameter:
        w = getattr(self.module(name), "weight", None)
        if not isinstance(w, nn.Parameter):
            raise ValueError(f"{name} has no weight parameter")
        return w

    def blocks(self) -> nn.ModuleList:
        blocks = get_submodule(self.model, self.arch.layers_path)
        assert isinstance(blocks, nn.ModuleList)
        return blocks

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) for every edited module."""
        return {m.name: (m.d_in, m.d_out) for m in self.modules}

    # -- layout ---------------------------------------------------------------------
    def to_rows(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored weight → row convention (d_in, d_out). A view, not a copy."""
        return stored.t() if self.arch.kind == "linear" else stored

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Row convention (d_in, d_out) → stored layout. A view, not a copy."""
        return rows.t() if self.arch.kind == "linear" else rows

    def weight_rows(self, name: str) -> torch.Tensor:
        """float32 copy of a module's weight in row convention, (d_in, d_out)."""
        return self.to_rows(self.weight(name).detach()).float().clone()
