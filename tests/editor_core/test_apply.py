from __future__ import annotations

import pytest
import torch

from editor_core.apply import apply_delta, new_weights, restore, snapshot
from tests.editor_core.test_editor import editor_for, facts, tiny_loaded


def weights(loaded) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loaded.model.named_parameters()}


def test_apply_then_restore_is_bit_identical() -> None:
    loaded = tiny_loaded()
    before = weights(loaded)
    masters = snapshot(loaded.adapter)
    delta = editor_for(loaded).compute_delta(facts(4))
    expected = new_weights(loaded.adapter, delta.shifts, masters)
    assert all(torch.equal(before[n], w) for n, w in weights(loaded).items())  # untouched
    apply_delta(loaded.adapter, delta, masters)
    for name in loaded.adapter.names:
        assert torch.equal(loaded.adapter.weight(name), expected[name])
        assert not torch.equal(loaded.adapter.weight(name), before[name + ".weight"])
    restore(loaded.adapter, masters)
    assert all(torch.equal(before[n], w) for n, w in weights(loaded).items())


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])  # nn.Linear vs HF Conv1D
def test_shift_changes_module_output_by_u_times_s(model_type: str) -> None:
    loaded = tiny_loaded(model_type)
    adapter = loaded.adapter
    name = adapter.names[0]
    d_in, d_out = adapter.shapes()[name]
    u = torch.randn(5, d_in)
    S = torch.randn(d_in, d_out) * 0.1
    with torch.no_grad():
        y0 = adapter.module(name)(u)
        masters = snapshot(adapter)
        apply_delta(adapter, {name: S}, masters)
        y1 = adapter.module(name)(u)
        restore(adapter, masters)
    torch.testing.assert_close(y1 - y0, u @ S, rtol=1e-4, atol=1e-5)


def test_bf16_model_applies_from_float32_masters_and_restores_exactly() -> None:
    loaded = tiny_loaded()
    loaded.model.to(torch.bfloat16)
    adapter = loaded.adapter
    before = weights(loaded)
    masters = snapshot(adapter)
    assert all(m.dtype == torch.float32 for m in masters.values())
    shifts = {n: torch.full(adapter.shapes()[n], 1e-4) for n in adapter.names}
    for _ in range(3):  # repeated apply from masters never accumulates rounding
        apply_delta(adapter, shifts, masters)
    name = adapter.names[0]
    expected = adapter.from_rows(masters[name] + shifts[name]).to(torch.bfloat16)
    assert torch.equal(adapter.weight(name), expected)
    restore(adapter, masters)
    assert all(torch.equal(before[n], w) for n, w in weights(loaded).items())
