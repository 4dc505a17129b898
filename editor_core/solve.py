"""The normal equation (MALMEN.md §2.4) and its closed-form backward (§3.3).

    S* = argmin ‖K S − D‖² + λ‖S‖² = (KᵀK + λI)⁻¹ KᵀD        (primal, d_in × d_in system)
       = Kᵀ (KKᵀ + λI)⁻¹ D                                    (dual, n × n system)

With a preservation prior P (d_in × d_in, positive semi-definite; see preserve.py) the
regulariser becomes λ‖S‖² + tr(Sᵀ P S), i.e. A = KᵀK + λI + P: P = μ·E[k kᵀ] over keys
of ordinary text penalises changing the outputs the model gives on ordinary inputs, as
MEMIT's covariance term does.  Only the primal form takes a prior.

K: (n, d_in) keys, D: (n, d_out) value differences, S: (d_in, d_out).  Both systems are
symmetric positive definite for λ > 0 and are solved by Cholesky in float32 or float64,
never in half precision.  `KᵀK` and `KᵀD` are sums over rows, accumulated chunk by chunk
(and, in joint mode, edit by edit).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

GRAM_CHUNK = 4096  # rows per Gram accumulation step


def _dtype(name: str | torch.dtype) -> torch.dtype:
    dtype = getattr(torch, name) if isinstance(name, str) else name
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"solve dtype must be float32 or float64, not {name}")
    return dtype


def gram(
    K: torch.Tensor, D: torch.Tensor, dtype: str | torch.dtype = "float32", chunk: int = GRAM_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(KᵀK, KᵀD) accumulated over row chunks: (d_in, d_in), (d_in, d_out)."""
    dt = _dtype(dtype)
    ktk = K.new_zeros((K.shape[1], K.shape[1]), dtype=dt)  # (d_in, d_in)
    ktd = K.new_zeros((K.shape[1], D.shape[1]), dtype=dt)  # (d_in, d_out)
    for i in range(0, K.shape[0], chunk):
        k = K[i : i + chunk].to(dt)  # (c, d_in)
        ktk += k.T @ k
        ktd += k.T @ D[i : i + chunk].to(dt)
    return ktk, ktd


def spd_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A⁻¹B for symmetric positive definite A, by Cholesky.

    If the factorisation fails in float32 (a badly conditioned system), it is retried in
    float64 and, failing that, with a small diagonal jitter; the result keeps A's dtype.
    """
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    log.warning("Cholesky failed (info=%d) in %s; retrying in float64", int(info), A.dtype)
    A64, B64 = A.double(), B.double()
    eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
    jitter = 0.0
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(A64 + jitter * eye)
        if int(info) == 0:
            return torch.cholesky_solve(B64, L).to(A.dtype)
        jitter = max(jitter * 10, 1e-10 * float(A64.diagonal().abs().mean()) + 1e-12)
    raise torch.linalg.LinAlgError("normal equation is not positive definite even with jitter")


def system_matrix(
    ktk: torch.Tensor, lam: float | torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """A = KᵀK + λI (+ P), in the Gram's dtype: (d_in, d_in)."""
    A = ktk + float(lam) * torch.eye(ktk.shape[0], dtype=ktk.dtype, device=ktk.device)
    if prior is not None:
        A = A + prior.to(device=ktk.device, dtype=ktk.dtype)
    return A


def solve_from_gram(
    ktk: torch.Tensor,
    ktd: torch.Tensor,
    lam: float | torch.Tensor,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Primal solve (KᵀK + λI + P)⁻¹ KᵀD, in the Gram's dtype: (d_in, d_out)."""
    return spd_solve(system_matrix(ktk, lam, prior), ktd)


def ridge_solve(
    K: torch.Tensor,
    D: torch.Tensor,
    lam: float | torch.Tensor,
    dtype: str | torch.dtype = "float32",
    form: str = "auto",
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """S* (d_in, d_out) float32; `form` "auto" picks dual when n < d_in and no prior."""
    dt = _dtype(dtype)
    n, d_in = K.shape
    if prior is None and (form == "dual" or (form == "auto" and n < d_in)):
        Kd = K.to(dt)  # (n, d_in)
        A = Kd @ Kd.T + float(lam) * torch.eye(n, dtype=dt, device=K.device)  # (n, n)
        return (Kd.T @ spd_solve(A, D.to(dt))).float()  # (d_in, d_out)
    ktk, ktd = gram(K, D, dt)
    return solve_from_gram(ktk, ktd, lam, prior).float()


def ridge_backward(
    K: torch.Tensor,
    S: torch.Tensor,
    grad_S: torch.Tensor,
    lam: float | torch.Tensor,
    dtype: str | torch.dtype = "float32",
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂D, ∂L/∂log λ) from G_S = ∂L/∂S*, with K (and the prior P) treated as constants.

    A = KᵀK + λI + P, M = A⁻¹ G_S:  ∂L/∂D = K M  (n, d_out),  ∂L/∂log λ = −λ ⟨M, S*⟩_F.
    When n < d_in, M comes from the Woodbury identity
    A⁻¹ = (I − Kᵀ(KKᵀ + λI)⁻¹K)/λ, so only an n × n system is factorised.
    """
    dt = _dtype(dtype)
    lam_f = float(lam)
    Kd, G = K.to(dt), grad_S.to(dt)
    n, d_in = K.shape
    if prior is None and n < d_in:
        small = Kd @ Kd.T + lam_f * torch.eye(n, dtype=dt, device=K.device)  # (n, n)
        M = (G - Kd.T @ spd_solve(small, Kd @ G)) / lam_f  # (d_in, d_out)
    else:
        ktk = K.new_zeros((d_in, d_in), dtype=dt)
        for i in range(0, n, GRAM_CHUNK):
            k = Kd[i : i + GRAM_CHUNK]
            ktk += k.T @ k
        M = solve_from_gram(ktk, G, lam_f, prior)  # (d_in, d_out)
    grad_D = (Kd @ M).float()  # (n, d_out)
    grad_log_lam = -lam_f * (M * S.to(dt)).sum()
    return grad_D, grad_log_lam.float()
