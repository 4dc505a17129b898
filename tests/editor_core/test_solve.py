from __future__ import annotations

import pytest
import torch

from editor_core.solve import gram, ridge_backward, ridge_solve, solve_from_gram


def reference(K: torch.Tensor, D: torch.Tensor, lam: float) -> torch.Tensor:
    K64, D64 = K.double(), D.double()
    A = K64.T @ K64 + lam * torch.eye(K.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, K64.T @ D64)


@pytest.mark.parametrize("n", [5, 40, 200])  # n < d_in, n ≈ d_in, n > d_in
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_solve_matches_float64_reference(n: int, dtype: str) -> None:
    g = torch.Generator().manual_seed(n)
    K, D = torch.randn(n, 48, generator=g), torch.randn(n, 16, generator=g)
    ref = reference(K, D, 0.7)
    # The dual system is rank-deficient + λI when n > d_in: "auto" never uses it there.
    forms = ("auto", "primal", "dual") if n < 48 else ("auto", "primal")
    for form in forms:
        S = ridge_solve(K, D, 0.7, dtype, form=form)
        assert S.dtype == torch.float32 and S.shape == (48, 16)
        assert (S.double() - ref).norm() / ref.norm() < 1e-5, form


def test_primal_equals_dual_and_chunked_gram() -> None:
    g = torch.Generator().manual_seed(1)
    K, D = torch.randn(30, 64, generator=g), torch.randn(30, 8, generator=g)
    primal = ridge_solve(K, D, 2.0, "float64", form="primal")
    dual = ridge_solve(K, D, 2.0, "float64", form="dual")
    torch.testing.assert_close(primal, dual, rtol=1e-6, atol=1e-7)
    whole = gram(K, D, "float64", chunk=10_000)
    chunked = gram(K, D, "float64", chunk=7)
    torch.testing.assert_close(whole[0], chunked[0])
    torch.testing.assert_close(solve_from_gram(*whole, 2.0), solve_from_gram(*chunked, 2.0))


def test_ill_conditioned_keys_give_finite_output() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(200, 1, generator=g)
    K = base @ torch.randn(1, 64, generator=g) * 1e4 + 1e-6 * torch.randn(200, 64, generator=g)
    D = torch.randn(200, 8, generator=g)
    for lam in (1e-6, 1.0):
        for form in ("primal", "dual"):
            S = ridge_solve(K, D, lam, "float32", form=form)
            assert torch.isfinite(S).all()


@pytest.mark.parametrize("n", [6, 50])  # Woodbury (n < d_in) and Gram branches
def test_closed_form_backward_matches_autograd(n: int) -> None:
    g = torch.Generator().manual_seed(3)
    d_in, d_out = 20, 7
    K = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    D = torch.randn(n, d_out, generator=g, dtype=torch.float64, requires_grad=True)
    log_lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    W = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)  # L = <W, S> + ‖S‖²
    A = K.T @ K + log_lam.exp() * torch.eye(d_in, dtype=torch.float64)
    S = torch.linalg.solve(A, K.T @ D)
    loss = (W * S).sum() + (S**2).sum()
    gD, glam = torch.autograd.grad(loss, [D, log_lam])
    G_S = W + 2 * S.detach()
    my_gD, my_glam = ridge_backward(K, S.detach(), G_S, float(log_lam.detach().exp()), "float64")
    torch.testing.assert_close(my_gD.double(), gD, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(my_glam.double(), glam, rtol=1e-5, atol=1e-6)


def test_half_precision_solve_is_refused() -> None:
    with pytest.raises(ValueError, match="float32 or float64"):
        ridge_solve(torch.randn(3, 4), torch.randn(3, 2), 1.0, "bfloat16")
