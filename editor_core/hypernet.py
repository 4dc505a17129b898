"""MALMEN's hyper-network (MALMEN.md §2.2–2.3).

For each cached row, `h = [u ; g]` (D = d_in + d_out) is normalised by running statistics
that are frozen outside meta-training, passed through `n_blocks` residual low-rank blocks

    x ← x + scale_ℓ ⊙ relu0(x A B + b) + shift_ℓ,    relu0 = clamp(min=0)

and split into a pseudo-key ũ (d_in) and a pseudo-gradient g̃ (d_out).  The value
difference of the row is `d = −η_ℓ (u·ũ) g̃`.  One network per distinct (d_in, d_out)
shape; scale/shift/η/log λ are per edited layer.

`relu0` is `clamp(min=0)`, not `F.relu`: at init B = 0 and b = 0, so the pre-activation is
exactly 0 and F.relu's gradient there is 0 — the blocks would never train (MALMEN.md §5).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

_NORM_EPS = 1e-5


@dataclass(frozen=True)
class HyperConfig:
    rank: int = 512  # clamped to D = d_in + d_out
    n_blocks: int = 2
    lr: float = 1e-5
    lambda_lr: float = 1e-2  # own LR for log λ: at the net's LR λ never moves (MALMEN.md §6)
    eta_init: float = 1e-6
    lambda_init: float = 1.0
    # λ_ℓ = exp(log λ_ℓ) · E‖u‖² of layer ℓ (running mean over meta-training, frozen
    # afterwards), so λ starts at "one average row" of regularisation whatever the key
    # scale (≈700 vs ≈14,000 across SmolLM2 layers).  False: λ_ℓ = exp(log λ_ℓ).
    lambda_key_scaled: bool = True


def relu0(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose gradient at exactly 0 is 1 (see module docstring)."""
    return x.clamp(min=0)


class LowRankBlock(nn.Module):
    def __init__(self, dim: int, rank: int, n_layers: int):
        super().__init__()
        self.A = nn.Parameter(torch.randn(dim, rank) / math.sqrt(dim))  # (D, r)
        self.B = nn.Parameter(torch.zeros(rank, dim))  # (r, D): identity at init
        self.b = nn.Parameter(torch.zeros(dim))  # (D,)
        self.scale = nn.Parameter(torch.ones(n_layers, dim))  # (n_layers, D)
        self.shift = nn.Parameter(torch.zeros(n_layers, dim))  # (n_layers, D)

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        h = relu0(x @ self.A @ self.B + self.b)  # (n, D)
        return x + self.scale[layer] * h + self.shift[layer]


class MalmenHyperNet(nn.Module):
    """The network shared by the edited layers of one (d_in, d_out) shape."""

    norm_count: torch.Tensor  # () float64, rows observed
    norm_mean: torch.Tensor  # (D,) float64
    norm_m2: torch.Tensor  # (D,) float64, Σ (x − μ)²
    key_sq_count: torch.Tensor  # (n_layers,) float64
    key_sq_mean: torch.Tensor  # (n_layers,) float64, running E‖u‖² per layer

    def __init__(self, d_in: int, d_out: int, n_layers: int, cfg: HyperConfig):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        dim = d_in + d_out
        self.rank = min(cfg.rank, dim)
        if self.rank < cfg.rank:
            log.info("hyper-network rank %d clamped to D = %d", cfg.rank, dim)
        self.blocks = nn.ModuleList(
            LowRankBlock(dim, self.rank, n_layers) for _ in range(cfg.n_blocks)
        )
        self.eta = nn.Parameter(torch.full((n_layers,), cfg.eta_init))  # (n_layers,)
        self.log_lambda = nn.Parameter(torch.full((n_layers,), math.log(cfg.lambda_init)))
        # Frozen normaliser: updated only by `observe` in training mode.
        self.register_buffer("norm_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("norm_mean", torch.zeros(dim, dtype=torch.float64))  # (D,)
        self.register_buffer("norm_m2", torch.zeros(dim, dtype=torch.float64))  # (D,) Σ(x-μ)²
        self.register_buffer("key_sq_count", torch.zeros(n_layers, dtype=torch.float64))
        self.register_buffer("key_sq_mean", torch.ones(n_layers, dtype=torch.float64))

    # -- normaliser -------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, u: torch.Tensor, g: torch.Tensor, layer: int) -> None:
        """Fold a chunk of rows into the running statistics (training mode only).

        Chan's parallel update of mean and M2; a one-row chunk contributes to the mean and
        to M2 through the between-chunk term only, so it never yields a NaN variance.
        """
        if not self.training:
            return
        h = torch.cat([u, g], dim=-1).double()  # (n, D)
        n = float(h.shape[0])
        if n == 0:
            return
        mean = h.mean(0)  # (D,)
        m2 = ((h - mean) ** 2).sum(0)  # (D,)
        total = self.norm_count + n
        delta = mean - self.norm_mean
        self.norm_m2 += m2 + delta**2 * self.norm_count * n / total
        self.norm_mean += delta * n / total
        self.norm_count.copy_(total)
        sq = (u.double() ** 2).sum(-1).mean()
        c = self.key_sq_count[layer]
        if c == 0:
            self.key_sq_mean[layer] = sq
        else:
            self.key_sq_mean[layer] += (sq - self.key_sq_mean[layer]) * n / (c + n)
        self.key_sq_count[layer] += n

    def normalise(self, h: torch.Tensor) -> torch.Tensor:
        if self.norm_count < 2:  # no statistics yet: identity
            return h
        var = self.norm_m2 / (self.norm_count - 1)
        std = (var + _NORM_EPS).sqrt()
        return (h - self.norm_mean.to(h.dtype)) / std.to(h.dtype)

    # -- forward ----------------------------------------------------------------------
    def forward(
        self, u: torch.Tensor, g: torch.Tensor, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ũ, g̃) for rows u (n, d_in), g (n, d_out) of edited layer `layer`."""
        x = self.normalise(torch.cat([u, g], dim=-1).float())  # (n, D)
        for block in self.blocks:
            x = block(x, layer)
        return x[:, : self.d_in], x[:, self.d_in :]  # (n, d_in), (n, d_out)

    def value_diffs(self, u: torch.Tensor, g: torch.Tensor, layer: int) -> torch.Tensor:
        """d_j = −η_ℓ (u_j·ũ_j) g̃_j, (n, d_out) float32."""
        pu, pg = self(u, g, layer)
        return -self.eta[layer] * (u.float() * pu).sum(-1, keepdim=True) * pg

    def lam(self, layer: int, key_scaled: bool) -> torch.Tensor:
        lam = self.log_lambda[layer].exp()
        if key_scaled:
            lam = lam * self.key_sq_mean[layer].float()
        return lam


def shape_key(d_in: int, d_out: int) -> str:
    return f"{d_in}x{d_out}"


class HyperNetBank(nn.Module):
    """All hyper-networks of one editor, and which edited module uses which (net, layer)."""

    def __init__(self, shapes: dict[str, tuple[int, int]], cfg: HyperConfig):
        super().__init__()
        self.cfg = cfg
        self.shapes = dict(shapes)
        self.slot: dict[str, tuple[str, int]] = {}  # module name -> (shape key, layer index)
        counts: dict[str, int] = {}
        for name, (d_in, d_out) in shapes.items():
            key = shape_key(d_in, d_out)
            self.slot[name] = (key, counts.get(key, 0))
            counts[key] = counts.get(key, 0) + 1
        nets = {}
        for key, n in counts.items():
            d_in, d_out = (int(s) for s in key.split("x"))
            nets[key] = MalmenHyperNet(d_in, d_out, n, cfg)
        self.nets = nn.ModuleDict(nets)

    def net(self, name: str) -> tuple[MalmenHyperNet, int]:
        key, layer = self.slot[name]
        net = self.nets[key]
        assert isinstance(net, MalmenHyperNet)
        return net, layer

    def observe(self, name: str, u: torch.Tensor, g: torch.Tensor) -> None:
        net, layer = self.net(name)
        net.observe(u, g, layer)

    def value_diffs(self, name: str, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        net, layer = self.net(name)
        return net.value_diffs(u, g, layer)

    def pseudo(self, name: str, u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(ũ, g̃, η) — for the MEND-style baseline."""
        net, layer = self.net(name)
        pu, pg = net(u, g, layer)
        return pu, pg, net.eta[layer]

    def lam(self, name: str) -> torch.Tensor:
        net, layer = self.net(name)
        return net.lam(layer, self.cfg.lambda_key_scaled)

    def log_lambda_params(self) -> list[nn.Parameter]:
        return [n.log_lambda for n in self.nets.values() if isinstance(n, MalmenHyperNet)]

    def add_log_lambda_grad(self, name: str, grad: torch.Tensor) -> None:
        net, layer = self.net(name)
        if net.log_lambda.grad is None:
            net.log_lambda.grad = torch.zeros_like(net.log_lambda)
        net.log_lambda.grad[layer] += grad.to(net.log_lambda.dtype)
