from __future__ import annotations

import torch
import torch.nn.functional as F

from editor_core.hypernet import HyperConfig, HyperNetBank, MalmenHyperNet, relu0


def one_step(net: MalmenHyperNet) -> None:
    g = torch.Generator().manual_seed(0)
    u, grad = torch.randn(10, 12, generator=g), torch.randn(10, 4, generator=g)
    target = torch.randn(10, 4, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = (net.value_diffs(u, grad, 0) * target).sum()
    loss.backward()
    opt.step()


def test_net_starts_as_identity_and_every_block_learns() -> None:
    net = MalmenHyperNet(12, 4, n_layers=2, cfg=HyperConfig(rank=8, n_blocks=3, eta_init=1.0))
    u, g = torch.randn(5, 12), torch.randn(5, 4)
    pu, pg = net(u, g, 1)
    torch.testing.assert_close(torch.cat([pu, pg], -1), torch.cat([u, g], -1))
    one_step(net)
    for block in net.blocks:
        assert block.B.norm() > 0  # not dead (MALMEN.md §5)


def test_f_relu_would_leave_the_blocks_dead() -> None:
    x = torch.zeros(3, requires_grad=True)
    (relu0(x).sum()).backward()
    assert x.grad is not None and (x.grad == 1).all()
    y = torch.zeros(3, requires_grad=True)
    F.relu(y).sum().backward()
    assert y.grad is not None and (y.grad == 0).all()  # the trap relu0 avoids


def test_normaliser_updates_only_in_training_and_guards_single_rows() -> None:
    net = MalmenHyperNet(3, 2, n_layers=1, cfg=HyperConfig(rank=4))
    u, g = torch.randn(1, 3), torch.randn(1, 2)
    net.eval()
    net.observe(u, g, 0)
    assert net.norm_count == 0
    net.train()
    net.observe(u, g, 0)  # a one-row chunk
    net.observe(u * 2, g * 2, 0)
    net.observe(torch.randn(7, 3), torch.randn(7, 2), 0)
    assert net.norm_count == 9
    pu, pg = net(u, g, 0)
    assert torch.isfinite(pu).all() and torch.isfinite(pg).all()
    # running statistics equal the batch statistics of everything observed
    net.eval()
    frozen = net(u, g, 0)
    net.observe(torch.randn(4, 3) * 100, torch.randn(4, 2), 0)  # eval: ignored
    torch.testing.assert_close(net(u, g, 0), frozen)


def test_one_net_per_shape_with_per_layer_slots_and_rank_clamp() -> None:
    shapes = {"a": (8, 4), "b": (8, 4), "c": (6, 4)}
    bank = HyperNetBank(shapes, HyperConfig(rank=512))
    assert set(bank.nets) == {"8x4", "6x4"}
    assert bank.slot["b"] == ("8x4", 1)
    assert bank.net("a")[0].rank == 12  # r ≤ D
    assert float(bank.lam("a").detach()) == 1.0
