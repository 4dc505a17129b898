"""Joint mode (ARCHITECTURE.md, Versions): every edit's rows kept, one solve over all.

`KᵀK` and `KᵀD` are sums over rows, hence over edits: solving the union of edits at once
equals adding them one at a time, and removing an edit is exact (its rows are simply not
summed).  Rows are computed once, against the base weights, and kept on the CPU.
Re-editing the same (normalised) prompt supersedes the older edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from editor_core.editor import EditRows
from editor_core.encoding import normalise_prompt
from editor_core.solve import _dtype, solve_from_gram


def split_rows(rows: dict[str, EditRows], n_requests: int) -> list[dict[str, EditRows]]:
    """Per-request rows (owner reset to 0) from a batch's rows."""
    out: list[dict[str, EditRows]] = [{} for _ in range(n_requests)]
    for name, r in rows.items():
        for i in range(n_requests):
            sel = r.owner == i
            out[i][name] = EditRows(
                r.keys[sel].cpu(),
                r.values[sel].cpu(),
                torch.zeros(int(sel.sum()), dtype=torch.long),
            )
    return out


@dataclass
class _Entry:
    prompt: str
    key: str  # normalised prompt
    rows: dict[str, EditRows]


class EditLedger:
    """Per-edit rows per module, keyed by edit id, in insertion order."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, edit_id: object) -> bool:
        return edit_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def add(self, edit_id: str, prompt: str, rows: dict[str, EditRows]) -> str | None:
        """Add an edit; returns the id of the edit it supersedes (same normalised prompt)."""
        key = normalise_prompt(prompt)
        old = next((i for i, e in self._entries.items() if e.key == key and i != edit_id), None)
        if old is not None:
            del self._entries[old]
        self._entries.pop(edit_id, None)
        cpu = {
            n: EditRows(
                r.keys.detach().float().cpu(),
                r.values.detach().float().cpu(),
                torch.zeros(r.keys.shape[0], dtype=torch.long),
            )
            for n, r in rows.items()
        }
        self._entries[edit_id] = _Entry(prompt, key, cpu)
        return old

    def remove(self, edit_id: str) -> None:
        if edit_id not in self._entries:
            raise KeyError(f"edit {edit_id!r} is not in the ledger")
        del self._entries[edit_id]

    def rows_for(self, edit_id: str) -> dict[str, EditRows]:
        return self._entries[edit_id].rows

    def solve(
        self,
        lambdas: dict[str, float],
        dtype: str | torch.dtype = "float32",
        priors: dict[str, torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """S* per module over all edits, accumulating KᵀK and KᵀD edit by edit.

        Modules with no rows (empty ledger) get a zero shift only if they appear in
        `lambdas`; callers apply `{}` for an empty ledger.
        """
        dt = _dtype(dtype)
        shifts: dict[str, torch.Tensor] = {}
        if not self._entries:
            return shifts
        for name, lam in lambdas.items():
            ktk: torch.Tensor | None = None
            ktd: torch.Tensor | None = None
            for e in self._entries.values():
                r = e.rows.get(name)
                if r is None or r.keys.shape[0] == 0:
                    continue
                k, d = r.keys.to(dt), r.values.to(dt)  # (n_e, d_in), (n_e, d_out)
                ktk = k.T @ k if ktk is None else ktk + k.T @ k  # (d_in, d_in)
                ktd = k.T @ d if ktd is None else ktd + k.T @ d  # (d_in, d_out)
            if ktk is not None and ktd is not None:
                prior = priors.get(name) if priors else None
                shifts[name] = solve_from_gram(ktk, ktd, lam, prior).float()
        return shifts

    # -- persistence (safetensors-friendly) -------------------------------------------
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(flat {"{i}/{module}/keys|values": tensor}, JSON-able metadata)."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"format_version": 1, "edits": []}
        for i, (edit_id, e) in enumerate(self._entries.items()):
            meta["edits"].append({"edit_id": edit_id, "prompt": e.prompt, "modules": list(e.rows)})
            for name, r in e.rows.items():
                tensors[f"{i}/{name}/keys"] = r.keys.contiguous()
                tensors[f"{i}/{name}/values"] = r.values.contiguous()
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> EditLedger:
        ledger = cls()
        for i, e in enumerate(meta["edits"]):
            rows = {}
            for name in e["modules"]:
                k, v = tensors[f"{i}/{name}/keys"], tensors[f"{i}/{name}/values"]
                rows[name] = EditRows(k, v, torch.zeros(k.shape[0], dtype=torch.long))
            ledger._entries[e["edit_id"]] = _Entry(e["prompt"], normalise_prompt(e["prompt"]), rows)
        return ledger
