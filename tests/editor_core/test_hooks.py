from __future__ import annotations

import torch

from editor_core.apply import apply_delta, restore, snapshot
from editor_core.hooks import grad_from, shifted
from tests.editor_core.test_editor import hook_count, tiny_loaded


def test_shifted_forward_equals_applied_weights() -> None:
    loaded = tiny_loaded("gpt2")
    adapter = loaded.adapter
    ids = torch.randint(1, 300, (2, 7))
    shifts = {n: 0.05 * torch.randn(adapter.shapes()[n]) for n in adapter.names}
    with torch.no_grad(), shifted(adapter, shifts):
        via_hooks = loaded.model(input_ids=ids).logits
    masters = snapshot(adapter)
    apply_delta(adapter, shifts, masters)
    with torch.no_grad():
        via_weights = loaded.model(input_ids=ids).logits
    restore(adapter, masters)
    torch.testing.assert_close(via_hooks, via_weights, rtol=1e-4, atol=1e-5)
    assert hook_count(loaded.model) == 0


def test_grad_from_tracks_only_from_the_lowest_edited_module() -> None:
    loaded = tiny_loaded(layers=4, edit=(2, 3))
    adapter = loaded.adapter
    seen: dict[str, bool] = {}
    low_block = adapter.blocks()[1]

    def spy(_m: torch.nn.Module, _a: tuple, o: object) -> None:
        out = o[0] if isinstance(o, tuple) else o
        assert isinstance(out, torch.Tensor)
        seen["below"] = out.requires_grad

    h = low_block.register_forward_hook(spy)
    mode = torch.is_grad_enabled()
    try:
        S = {adapter.names[0]: torch.zeros(adapter.shapes()[adapter.names[0]], requires_grad=True)}
        with shifted(adapter, S), grad_from(adapter):
            logits = loaded.model(input_ids=torch.randint(1, 300, (1, 5))).logits
    finally:
        h.remove()
    assert seen["below"] is False  # layers below the edited ones build no graph
    assert logits.requires_grad
    assert torch.is_grad_enabled() == mode  # the hook's enabling does not leak
    (g,) = torch.autograd.grad(logits.sum(), list(S.values()))
    assert g.abs().sum() > 0
    assert hook_count(loaded.model) == 0


def test_shifted_at_some_positions_acts_there_only() -> None:
    """`positions`: the change is made at the marked tokens and nowhere else — all ones is
    the whole shift, all zeros none, and a token marked alone leaves every earlier position
    as it was (causal) while moving its own."""
    loaded = tiny_loaded()
    model = loaded.model
    g = torch.Generator().manual_seed(1)
    shifts = {n: 0.5 * torch.randn(s, generator=g) for n, s in loaded.adapter.shapes().items()}
    ids = torch.randint(5, 50, (1, 8), generator=g)
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with shifted(loaded.adapter, shifts):
            full = model(input_ids=ids).logits
        ones, zeros, at5 = torch.ones(8), torch.zeros(8), torch.zeros(8)
        at5[5] = 1
        with shifted(loaded.adapter, shifts, ones):
            torch.testing.assert_close(model(input_ids=ids).logits, full)
        with shifted(loaded.adapter, shifts, zeros):
            torch.testing.assert_close(model(input_ids=ids).logits, base)
        with shifted(loaded.adapter, shifts, at5):
            part = model(input_ids=ids).logits
    torch.testing.assert_close(part[0, :5], base[0, :5])
    assert (part[0, 5] - base[0, 5]).abs().max() > 1e-3
    assert (part[0, 6:] - full[0, 6:]).abs().max() > 1e-4  # later tokens see only part of it
    assert hook_count(model) == 0
