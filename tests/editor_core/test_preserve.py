"""The preservation prior's low-rank storage: exact at full rank, the isotropic tail, and the
safetensors round trip (old files without a tail still load)."""

from __future__ import annotations

import torch

from editor_core.preserve import KeyPrior, low_rank_prior


def second_moment(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(4 * d, d, generator=g) * torch.linspace(0.1, 3.0, d)  # anisotropic keys
    return (k.T @ k / k.shape[0]).float()


def test_full_rank_prior_is_the_second_moment() -> None:
    c = second_moment(12)
    prior = low_rank_prior({"m": c}, rank=12, tail=True)
    assert prior.tail == {}  # nothing left out, no tail
    torch.testing.assert_close(prior.matrix("m"), c, rtol=1e-4, atol=1e-4)


def test_tail_is_the_mean_of_the_eigenvalues_left_out() -> None:
    c = second_moment(16, seed=1)
    evals, evecs = torch.linalg.eigh(c.double())
    plain = low_rank_prior({"m": c}, rank=6)
    tailed = low_rank_prior({"m": c}, rank=6, tail=True)
    tau = float(evals[:-6].mean())
    assert abs(tailed.tail["m"] - tau) < 1e-5
    u = evecs[:, -6:]
    expected = (u * evals[-6:]) @ u.T + tau * (torch.eye(16, dtype=torch.float64) - u @ u.T)
    torch.testing.assert_close(tailed.matrix("m").double(), expected, rtol=1e-4, atol=1e-4)
    # the tail brings the matrix closer to the full second moment than leaving it out
    err_plain = (plain.matrix("m") - c).norm()
    err_tail = (tailed.matrix("m") - c).norm()
    assert err_tail < err_plain
    # the directions left out are penalised by τ, not by zero
    v = evecs[:, 0].float()
    assert abs(float(v @ tailed.matrix("m") @ v) - tau) < 1e-3
    assert abs(float(v @ plain.matrix("m") @ v)) < 1e-3


def test_round_trip_keeps_the_tail_and_reads_files_without_one() -> None:
    c = second_moment(10, seed=2)
    prior = low_rank_prior({"a": c, "b": 2 * c}, rank=4, tail=True)
    again = KeyPrior.from_tensors(prior.to_tensors())
    assert set(again.tail) == {"a", "b"}
    for n in ("a", "b"):
        torch.testing.assert_close(again.matrix(n), prior.matrix(n), rtol=2e-3, atol=2e-3)
    old = {k: v for k, v in prior.to_tensors().items() if not k.endswith(".tail")}
    legacy = KeyPrior.from_tensors(old)
    assert legacy.tail == {}
    plain = low_rank_prior({"a": c, "b": 2 * c}, rank=4)
    torch.testing.assert_close(legacy.matrix("a"), plain.matrix("a"), rtol=2e-3, atol=2e-3)


def test_truncating_a_tailed_prior_matches_estimating_it_at_the_lower_rank() -> None:
    c = second_moment(16, seed=3)
    direct = low_rank_prior({"m": c}, rank=5, tail=True)
    cut = low_rank_prior({"m": c}, rank=11, tail=True).truncated(5)
    assert cut.basis["m"].shape == (16, 5)
    assert abs(cut.tail["m"] - direct.tail["m"]) < 1e-5
    torch.testing.assert_close(cut.matrix("m"), direct.matrix("m"), rtol=1e-4, atol=1e-4)
    plain = low_rank_prior({"m": c}, rank=11).truncated(5)
    assert plain.tail == {}  # no tail before, none after
    torch.testing.assert_close(
        plain.matrix("m"), low_rank_prior({"m": c}, rank=5).matrix("m"), rtol=1e-4, atol=1e-4
    )
