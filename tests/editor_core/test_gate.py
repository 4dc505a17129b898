"""The scope gate (editor_core/gate.py): an edit's change acts only near an edit's keys."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from editor_core import EditRequest
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.editor import EditorConfig, EditRows, WeightDelta
from editor_core.gate import Gate, ScopeGate, gated
from editor_core.metrics import token_accuracy
from tests.editor_core.test_editor import facts, hook_count, model_state, tiny_loaded
from tests.editor_core.test_optimise import optimising
from tests.tiny import CORPUS_WORDS as W


def edited(loaded, threshold: float | None):
    """Three one-token edits keyed at their last prompt token, on a sharpened tiny model
    (as test_optimise's landing test), and the delta of an optimising editor."""
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.mul_(30.0)
    reqs = [EditRequest(r.prompt, r.target.split()[0]) for r in facts(3, seed=11)]
    editor = optimising(loaded, scope_gate=threshold)
    return reqs, editor.compute_delta(reqs)


def logits(loaded, text: str) -> torch.Tensor:
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return loaded.model(input_ids=ids).logits[0]


def max_cosine(loaded, text: str, gate: ScopeGate) -> float:
    """The largest cosine between any token's key of `text` (unedited model) and the gate's
    keys, over the edited modules."""
    got: list[float] = []
    handles = []
    for name in loaded.adapter.names:

        def hook(_m, args, _out, name=name):
            u = F.normalize(args[0][0].float(), dim=-1)
            got.append(float((u @ gate.keys[name].T).max()))

        handles.append(loaded.adapter.module(name).register_forward_hook(hook))
    try:
        logits(loaded, text)
    finally:
        for h in handles:
            h.remove()
    return max(got)


def test_an_open_gate_is_the_weight_update() -> None:
    """Threshold −1 lets every token through: the same logits as writing the weights."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, -1.0)
    assert delta.gate is not None and delta.gate.threshold == -1.0
    text = f"A {W[4]} {W[9]} of {W[2]} was"
    masters = snapshot(loaded.adapter)
    with gated(loaded.adapter, delta.shifts, delta.gate):
        through_gate = [logits(loaded, r.prompt) for r in reqs] + [logits(loaded, text)]
    apply_delta(loaded.adapter, WeightDelta(delta.shifts), masters)  # written, ungated
    try:
        written = [logits(loaded, r.prompt) for r in reqs] + [logits(loaded, text)]
    finally:
        restore(loaded.adapter, masters)
    for a, b in zip(through_gate, written, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_edits_land_through_the_gate_and_far_prompts_run_unedited() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, 0.9)
    gate = delta.gate
    assert gate is not None
    far = [f"{W[13]} {W[14]} {W[15]}", f"A {W[16]} and a {W[17]}"]
    far = [t for t in far if max_cosine(loaded, t, gate) < gate.threshold]
    assert far, "no prompt of the tiny vocabulary stays below the gate"
    unedited = [logits(loaded, t) for t in far]
    before = model_state(loaded.model)
    hooks = hook_count(loaded.model)
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, delta, masters)
    try:
        assert token_accuracy(loaded.model, loaded.tokenizer, reqs, 8) == [1.0, 1.0, 1.0]
        for t, u in zip(far, unedited, strict=True):
            assert torch.equal(logits(loaded, t), u), t  # bit for bit: no change acted
        # the weights are never written: the change is in hooks
        for (n, a), b in zip(model_state(loaded.model).items(), before.values(), strict=True):
            assert torch.equal(a[0], b[0]), n
    finally:
        restore(loaded.adapter, masters)  # clears the gate
    assert hook_count(loaded.model) == hooks + len(loaded.adapter.names)  # idle gate hooks
    assert token_accuracy(loaded.model, loaded.tokenizer, reqs, 8) == [0.0, 0.0, 0.0]


def test_a_closed_gate_changes_nothing() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, None)
    assert delta.gate is None  # no scope_gate: a plain weight update
    closed = ScopeGate(
        1.0, {n: F.normalize(torch.randn(2, s.shape[0]), dim=-1) for n, s in delta.shifts.items()}
    )
    before = [logits(loaded, r.prompt) for r in reqs]
    with gated(loaded.adapter, delta.shifts, closed):
        for r, b in zip(reqs, before, strict=True):
            assert torch.equal(logits(loaded, r.prompt), b)


def test_the_gate_keeps_the_keys_of_rows_that_ask_for_a_change() -> None:
    keys = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    values = torch.tensor([[1.0], [0.0], [-2.0]])  # the middle row holds its place (a pin)
    gate = ScopeGate.of_rows(0.8, {"m": EditRows(keys, values, torch.zeros(3).long())})
    torch.testing.assert_close(gate.keys["m"], F.normalize(keys[[0, 2]], dim=-1))
    near = gate.near("m", torch.tensor([[[5.0, 0.1], [0.0, 1.0], [-1.0, 0.0]]]))
    assert near.squeeze(-1).tolist() == [[1.0, 0.0, 0.0]]


def test_gate_hooks_switch_between_changes_and_refuse_missing_keys() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, -1.0)
    assert delta.gate is not None
    base = logits(loaded, reqs[0].prompt)
    hooks = Gate(loaded.adapter)
    try:
        assert torch.equal(logits(loaded, reqs[0].prompt), base)  # nothing set
        hooks.set(delta.shifts, delta.gate)
        assert not torch.equal(logits(loaded, reqs[0].prompt), base)
        hooks.clear()
        assert torch.equal(logits(loaded, reqs[0].prompt), base)
        partial = replace(delta.gate, keys={})
        with pytest.raises(KeyError, match="no gate keys"):
            hooks.set(delta.shifts, partial)
    finally:
        hooks.remove()


@pytest.mark.parametrize("bad", [1.5, -2.0])
def test_the_threshold_is_a_cosine(bad: float) -> None:
    with pytest.raises(ValueError, match="scope_gate"):
        EditorConfig(scope_gate=bad)
    with pytest.raises(ValueError, match="cosine"):
        ScopeGate(bad, {})


def lowest_inputs(loaded, text: str) -> torch.Tensor:
    """The lowest edited module's input at every token of `text` (L, d_in), unit length."""
    got = []
    handle = loaded.adapter.module(loaded.adapter.names[0]).register_forward_hook(
        lambda _m, args, _out: got.append(F.normalize(args[0][0].float(), dim=-1))
    )
    try:
        logits(loaded, text)
    finally:
        handle.remove()
    return got[0]


def test_modes_combine_the_layers_decisions() -> None:
    """Lowest module open at every token, the upper one closed: "each" changes the lowest
    layer only, "sticky" and "first" both layers (as an open gate); closed at both, no mode
    changes anything."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, -1.0)
    low, high = loaded.adapter.names
    text = reqs[0].prompt
    here = lowest_inputs(loaded, text)
    far = -F.normalize(torch.ones(1, here.shape[1]), dim=-1)  # cosine < 0.99 to every key

    def run(keys: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
        with gated(loaded.adapter, delta.shifts, ScopeGate(0.99, keys, mode)):  # type: ignore[arg-type]
            return logits(loaded, text)

    base = logits(loaded, text)
    with gated(loaded.adapter, delta.shifts, ScopeGate(-1.0, delta.gate.keys)):  # type: ignore[union-attr]
        both = logits(loaded, text)
    with gated(loaded.adapter, {low: delta.shifts[low]}, ScopeGate(-1.0, delta.gate.keys)):  # type: ignore[union-attr]
        low_only = logits(loaded, text)
    open_low = {low: here, high: far}
    torch.testing.assert_close(run(open_low, "each"), low_only)
    torch.testing.assert_close(run(open_low, "sticky"), both)
    torch.testing.assert_close(run(open_low, "first"), both)
    closed_low = {low: far, high: far}
    for mode in ("each", "sticky", "first"):
        assert torch.equal(run(closed_low, mode), base)
    with pytest.raises(ValueError, match="mode"):
        EditorConfig(scope_gate=0.8, scope_gate_mode="all")  # type: ignore[arg-type]


def test_the_gate_opens_near_every_context_an_edit_was_seen_in() -> None:
    """The value-optimising spread keeps each edit's keys before averaging them into rows
    (one per context here); the gate holds those and the rows' own keys."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs, delta = edited(loaded, 0.9)
    assert delta.gate is not None
    for name, rows in delta.rows.items():
        seen = rows.context_keys
        assert seen is not None and seen.shape == rows.keys.shape  # one context, one token
        torch.testing.assert_close(seen, rows.keys)  # a mean over one context is itself
        assert delta.gate.keys[name].shape[0] == 2 * len(reqs)
        alone = ScopeGate.of_rows(0.9, delta.rows, contexts=False)
        assert alone.keys[name].shape[0] == len(reqs)
