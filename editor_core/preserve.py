"""Preservation prior: the second moment of an edited module's keys on ordinary text.

MALMEN's ridge term λ‖S‖² treats every direction of key space alike.  But the keys of an
edit prompt ("The capital of France is") lie close to the keys of every prompt with the
same relation template and another subject, so the least-squares shift moves those too —
the locality failure measured in MALMEN.md §6.  Adding tr(Sᵀ P S) with
P = μ · E[k kᵀ] over keys of ordinary prompts (MEMIT's covariance term) makes changes along
frequently-used key directions expensive, and pushes the shift into the directions that
set the edited subject apart.  P is constant, so joint mode (sums over edits) still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from editor_core.adapters import ModelAdapter
from editor_core.encoding import EditRequest, KeyMask
from editor_core.hooks import iter_keys
from editor_core.progress import bar

log = logging.getLogger(__name__)


@torch.no_grad()
def key_second_moment(
    adapter: ModelAdapter,
    tokenizer: object,
    requests: Sequence[EditRequest],
    batch_size: int = 32,
    progress: bool = False,
    all_positions: bool = False,
    key_position: KeyMask = "predict",
) -> dict[str, torch.Tensor]:
    """E[k kᵀ] (d_in, d_in) float32 per edited module, over the keys at the positions that
    predict each request's continuation (the same positions an edit is keyed on; with
    `key_position` "subject", the subject's last token), or with `all_positions` over every
    token — what an edit keyed on the subject token must preserve, since every token of
    every prompt passes through the edited matrices."""
    sums = {m.name: torch.zeros(m.d_in, m.d_in, dtype=torch.float64) for m in adapter.modules}
    count = 0
    total = -(-len(requests) // batch_size)
    batches = iter_keys(
        adapter,
        tokenizer,
        requests,
        batch_size,
        key_position=key_position,
        all_positions=all_positions,
    )
    for owner, keys in bar(batches, total=total, desc="key statistics", progress=progress):
        for name, k in keys.items():
            k64 = k.double().cpu()  # (n_b, d_in)
            sums[name] += k64.T @ k64
        count += int(owner.shape[0])
    if count == 0:
        raise ValueError("no key rows: the statistics need prompts with continuations")
    log.info("key second moment over %d rows of %d prompts", count, len(requests))
    return {n: (s / count).float() for n, s in sums.items()}


PRESERVE_FILE = "preserve.safetensors"
DEFAULT_PRIOR_RANK = 256


@dataclass
class KeyPrior:
    """A low-rank E[k kᵀ] ≈ U diag(v) Uᵀ + τ (I − U Uᵀ) per module: the top eigen-directions
    of ordinary keys, and (optional) the mean eigenvalue τ of the directions left out.
    Without a tail (τ = 0, the shipped hyper-network editor's prior) the directions left out
    cost only λ, as in plain MALMEN."""

    basis: dict[str, torch.Tensor]  # (d_in, r) float32, orthonormal columns
    values: dict[str, torch.Tensor]  # (r,) float32 eigenvalues
    tail: dict[str, float] = field(default_factory=dict)  # τ per module; absent = 0

    def matrix(self, name: str) -> torch.Tensor:
        u, v = self.basis[name].float(), self.values[name].float()
        tau = float(self.tail.get(name, 0.0))
        m = (u * (v - tau)) @ u.T  # (d_in, d_in)
        if tau:
            m.diagonal().add_(tau)
        return m

    def truncated(self, rank: int) -> KeyPrior:
        """The same prior kept to its top `rank` directions; with a tail, the directions
        dropped join it (τ becomes the mean of every eigenvalue left out), exactly as
        `low_rank_prior(moments, rank, tail=True)` would have stored it — a smaller file
        without re-reading the corpus."""
        basis, values, taus = {}, {}, {}
        for name, u in self.basis.items():
            v = self.values[name]  # ascending
            r = min(rank, v.shape[0])
            basis[name], values[name] = u[:, -r:], v[-r:]
            if name in self.tail:
                left = u.shape[0] - r  # directions the tail now stands for
                dropped = float(v[: v.shape[0] - r].double().sum())
                total = self.tail[name] * (u.shape[0] - v.shape[0]) + dropped
                taus[name] = total / left if left else 0.0
        return KeyPrior(basis, values, taus)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{n}.basis": u.half().contiguous() for n, u in self.basis.items()}
        out.update({f"{n}.values": v.float().contiguous() for n, v in self.values.items()})
        out.update(
            {f"{n}.tail": torch.tensor([t], dtype=torch.float32) for n, t in self.tail.items()}
        )
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> KeyPrior:
        names = {k.rsplit(".", 1)[0] for k in tensors}
        return cls(
            {n: tensors[f"{n}.basis"].float() for n in names},
            {n: tensors[f"{n}.values"].float() for n in names},
            {n: float(tensors[f"{n}.tail"][0]) for n in names if f"{n}.tail" in tensors},
        )


def low_rank_prior(
    moments: dict[str, torch.Tensor], rank: int = DEFAULT_PRIOR_RANK, tail: bool = False
) -> KeyPrior:
    """Top-`rank` eigen-directions of each E[k kᵀ]; with `tail`, the mean of the remaining
    eigenvalues as τ, so no direction is left with the ridge term alone."""
    basis, values, taus = {}, {}, {}
    for name, c in moments.items():
        evals, evecs = torch.linalg.eigh(c.double())  # ascending
        r = min(rank, c.shape[0])
        basis[name] = evecs[:, -r:].float()  # (d_in, r)
        values[name] = evals[-r:].clamp(min=0).float()  # (r,)
        if tail and r < c.shape[0]:
            taus[name] = float(evals[:-r].clamp(min=0).mean())
        kept = float(values[name].sum() / evals.clamp(min=0).sum().clamp(min=1e-12))
        log.info("%s: rank-%d prior keeps %.1f%% of the key energy", name, r, 100 * kept)
    return KeyPrior(basis, values, taus)
