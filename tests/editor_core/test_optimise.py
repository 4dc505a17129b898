"""values="optimise": per-fact value optimisation at the subject token, spread over layers
(editor_core/optimize.py) — no hyper-network, MALMEN's solve and joint mode unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from editor_core import EditRequest
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.checkpoint import CheckpointError, save_editor
from editor_core.editor import EditorConfig, MalmenEditor, NoHyperNetworkError, WeightDelta
from editor_core.encoding import encode_edits
from editor_core.joint import EditLedger, split_rows
from editor_core.metrics import token_accuracy
from editor_core.optimize import (
    ValueOptConfig,
    _below,
    _block_output,
    _encode_chunk,
    _from_below,
    _lookalike_texts,
    _residual_at_top,
    in_context,
    key_positions,
    layer_shares,
    subject_groups,
)
from editor_core.preserve import low_rank_prior
from tests.editor_core.test_anchors import subject_facts
from tests.editor_core.test_editor import facts, model_state, tiny_loaded
from tests.tiny import CORPUS_WORDS as W
from tests.tiny import TINY_TYPES

OPT = ValueOptConfig(steps=60, lr=0.3, weight_decay=0.0, stop_loss=0.02, prefixes=("",))


def optimising(loaded, **kw) -> MalmenEditor:
    kw.setdefault("value_opt", OPT)
    kw.setdefault("lambda_override", 1e-3)
    cfg = EditorConfig(values="optimise", **kw)
    return MalmenEditor.optimising(loaded, cfg)


def distinct_subject_facts(n: int, seed: int) -> list[EditRequest]:
    seen: dict[str, EditRequest] = {}
    for r in subject_facts(8 * n, seed):
        seen.setdefault(r.subject or "", r)
    assert len(seen) >= n
    return list(seen.values())[:n]


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_steps_skip_the_blocks_below_the_delta_and_compute_the_same(model_type: str) -> None:
    """The value steps run the blocks up to the last edited one once (`_below`) and then
    only the blocks above it (`_from_below`): the logits — and the gradient reaching the
    added change — equal a whole forward pass that adds the change at that block's output,
    on every supported architecture (tuple-returning blocks included), and afterwards the
    blocks run as before."""
    loaded = tiny_loaded(model_type, layers=4, edit=(1, 2))
    model, blocks = loaded.model, loaded.adapter.blocks()
    top = loaded.adapter.layers[-1]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 200, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0  # a padded row
    sel = torch.tensor([2, 0])  # a subset of the batch, out of order, as the steps take
    rows, pos = torch.tensor([0, 1, 1]), torch.tensor([3, 2, 4])
    base_delta = torch.randn(3, model.config.hidden_size, generator=g)

    def whole_pass() -> tuple[torch.Tensor, torch.Tensor]:
        delta = base_delta.clone().requires_grad_(True)

        def add(_m, _a, out):
            h = _block_output(out).index_put((rows, pos), delta, accumulate=True)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = blocks[top].register_forward_hook(add)
        try:
            logits = model(input_ids=ids[sel], attention_mask=mask[sel], use_cache=False).logits
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(logits.pow(2).sum(), delta)
        return logits.detach(), grad

    def upper_only() -> tuple[torch.Tensor, torch.Tensor]:
        below = _below(model, blocks[top], ids, mask)
        assert below.h.shape[:2] == ids.shape
        delta = base_delta.clone().requires_grad_(True)
        with torch.no_grad(), _from_below(list(blocks)[: top + 1], below, sel, rows, pos, delta):
            logits = model(input_ids=ids[sel], attention_mask=mask[sel], use_cache=False).logits
            loss = logits.pow(2).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        return logits.detach(), grad

    with torch.no_grad():
        before = model(input_ids=ids[sel], attention_mask=mask[sel], use_cache=False).logits
    want_logits, want_grad = whole_pass()
    got_logits, got_grad = upper_only()
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(want_logits, before)  # the change reaches the logits
    assert not any("forward" in b.__dict__ for b in blocks)  # the blocks are themselves again
    assert torch.is_grad_enabled()
    with torch.no_grad():
        again = model(input_ids=ids[sel], attention_mask=mask[sel], use_cache=False).logits
    assert torch.equal(again, before)


def test_optimised_edits_land_and_the_model_is_restored() -> None:
    """A random tiny model barely reads a residual change at an earlier token (attention is
    near-uniform), so these facts name no subject: they are keyed at the last prompt token
    (the fallback) and have one-token targets.  Its logits are near-flat too; sharpened
    (output embeddings ×30), a target can become likely, so the stop rule is exercised."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.mul_(30.0)
    reqs = [EditRequest(r.prompt, r.target.split()[0]) for r in facts(3, seed=11)]
    editor = optimising(loaded)
    before = model_state(loaded.model)
    assert token_accuracy(loaded.model, loaded.tokenizer, reqs, 8) == [0.0, 0.0, 0.0]
    delta = editor.compute_delta(reqs)
    for (n, a), b in zip(model_state(loaded.model).items(), before.values(), strict=True):
        assert torch.equal(a[0], b[0]), n  # computing the delta leaves the model alone
    rows = delta.rows
    assert list(rows) == loaded.adapter.names
    for r in rows.values():
        assert r.keys.shape[0] == len(reqs)  # one row per fact and module
        assert r.owner.tolist() == [0, 1, 2]
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, delta, masters)
    try:
        assert token_accuracy(loaded.model, loaded.tokenizer, reqs, 8) == [1.0, 1.0, 1.0]
    finally:
        restore(loaded.adapter, masters)
    for (n, a), b in zip(model_state(loaded.model).items(), before.values(), strict=True):
        assert torch.equal(a[0], b[0]), n


@pytest.mark.parametrize("which", [(-1,), (-2,), (-1, -2)])
def test_keys_are_the_subject_token_inputs(which: tuple[int, ...]) -> None:
    """One row per fact and keyed subject token, its key the module's input there."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = [  # two-word subjects, so the last token and the one before it differ
        EditRequest("The paris tower of located is", "london", "paris tower"),
        EditRequest("The madrid company is founded in", "tower", "madrid company"),
        EditRequest("The london is located in", "paris", "london"),  # one token: keyed once
    ]
    rows = optimising(loaded, value_opt=replace(OPT, subject_tokens=which)).compute_rows(reqs)
    batch = encode_edits(loaded.tokenizer, reqs, key_position="subject")
    at = [
        key_positions(encode_edits(loaded.tokenizer, reqs, key_position="subject", subject_token=w))
        for w in which
    ]
    # (fact, position) of every row, fact by fact in `which` order: fact 2's subject is one
    # token, so -1 and -2 are one row
    want = list(dict.fromkeys((f, int(p[f])) for f in range(len(reqs)) for p in at))
    assert len(want) == (len(reqs) * len(which) - (len(which) - 1))
    seen = {}

    def grab(name):
        def hook(_m, args, _out):
            seen[name] = args[0].float()

        return hook

    hs = [loaded.adapter.module(n).register_forward_hook(grab(n)) for n in loaded.adapter.names]
    try:
        with torch.no_grad():
            loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        for h in hs:
            h.remove()
    # the lowest layer's keys are the base model's; higher layers see the lower shifts
    low = loaded.adapter.names[0]
    assert rows[low].owner.tolist() == [f for f, _ in want]
    expect = torch.stack([seen[low][f, p] for f, p in want])
    torch.testing.assert_close(rows[low].keys, expect, rtol=1e-5, atol=1e-6)


def test_contexts_are_prefixes_or_frames_around_the_prompt() -> None:
    assert in_context("Here is a fact. ", "Ada plays the") == "Here is a fact. Ada plays the"
    assert in_context("Q: {prompt}? A:", "Ada plays the") == "Q: Ada plays the? A:"
    assert in_context("", "Ada plays the") == "Ada plays the"


def test_a_frame_changes_the_loss_not_the_key() -> None:
    """Text a frame adds after the prompt comes after the subject, so the key (read at the
    subject's last token, causal attention) is the bare prompt's; the frame's variant only
    adds where the target is asked for."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(2, seed=3)
    bare = optimising(loaded).compute_rows(reqs)
    framed = optimising(
        loaded, value_opt=replace(OPT, prefixes=("", "{prompt} and so the answer is"))
    ).compute_rows(reqs)
    low = loaded.adapter.names[0]
    torch.testing.assert_close(framed[low].keys, bare[low].keys, rtol=1e-5, atol=1e-6)


def test_single_layer_values_do_not_depend_on_batch_mates() -> None:
    """With one edited layer there is no spread: each fact's row is its own, whatever it is
    optimised with (chunk size) — the property joint mode relies on."""
    loaded = tiny_loaded(layers=2, edit=(1,))
    reqs = distinct_subject_facts(4, seed=5)
    together = optimising(loaded).compute_rows(reqs)
    one_by_one = optimising(loaded, value_opt=replace(OPT, batch_facts=1)).compute_rows(reqs)
    alone = optimising(loaded).compute_rows(reqs[2:3])
    n = loaded.adapter.names[0]
    torch.testing.assert_close(together[n].values, one_by_one[n].values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together[n].keys, one_by_one[n].keys)
    torch.testing.assert_close(together[n].values[2:3], alone[n].values, rtol=1e-4, atol=1e-5)


def assert_rows_resolve(editor: MalmenEditor, reqs: list[EditRequest]) -> WeightDelta:
    """`editor`'s delta for `reqs`, after checking that the ledger re-solves its stored
    rows to the same shifts (what joint mode relies on)."""
    delta = editor.compute_delta(reqs)
    ledger = EditLedger()
    for i, r in enumerate(split_rows(delta.rows, len(reqs))):
        ledger.add(f"e{i}", reqs[i].prompt, r)
    joint = ledger.solve(editor.lambdas(), editor.config.solve_dtype, editor.priors())
    for n, s in delta.shifts.items():
        torch.testing.assert_close(joint[n], s, rtol=1e-3, atol=1e-5)
    return delta


def test_spread_rows_resolve_to_the_spread_shifts_and_fit_joint_mode() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=2)
    editor = optimising(loaded)
    delta = assert_rows_resolve(editor, reqs)
    # the lower layer does part of the work: the upper layer's rows ask for the rest only
    lo, hi = loaded.adapter.names
    assert delta.rows[lo].values.norm() > 0 and delta.rows[hi].values.norm() > 0


def test_layer_shares_tilt_the_spread_towards_the_upper_layers() -> None:
    assert layer_shares(3, 0.0) == pytest.approx([1 / 3, 1 / 2, 1])  # MEMIT's schedule
    tilted = layer_shares(3, 2.0)  # weights 1, 2, 3
    assert tilted == pytest.approx([1 / 6, 2 / 5, 1])
    assert layer_shares(1, 5.0) == [1.0]
    with pytest.raises(ValueError, match="upper_tilt"):
        layer_shares(3, -1.0)
    # in the spread: the lowest layer (nothing below it) asks for its share of the same gap
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(3, seed=4)
    flat = optimising(loaded)
    z = flat.residual_targets(reqs).z
    tilt = optimising(loaded, value_opt=replace(OPT, upper_tilt=3.0))  # weights 1, 4
    lo, hi = loaded.adapter.names
    a, b = flat.spread_rows(reqs, z), tilt.spread_rows(reqs, z)
    torch.testing.assert_close(b[lo].values, a[lo].values * (1 / 5) / (1 / 2))
    torch.testing.assert_close(b[lo].keys, a[lo].keys)
    assert not torch.allclose(b[hi].values, a[hi].values)  # the top layer closes what is left


def test_refine_closes_part_of_the_shortfall_the_solve_leaves() -> None:
    """The ridge solve leaves each fact's residual short of its target (two contexts per
    fact, four facts: the rows are not fitted exactly); one refinement (targets moved past
    themselves by the shortfall, re-spread) lands closer to the original targets."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=5)
    cfg = replace(OPT, prefixes=("", "Q: {prompt}? A:"))
    plain = optimising(loaded, value_opt=cfg)
    z = plain.residual_targets(reqs).z  # (F, 2, H)
    chunk = _encode_chunk(loaded.adapter, loaded.tokenizer, reqs, cfg, None)
    want = z.flatten(0, 1)

    def shortfall(editor: MalmenEditor) -> float:
        shifts = editor.solve(editor.spread_rows(reqs, z), len(reqs))
        return float((want - _residual_at_top(loaded.adapter, chunk, shifts)).norm())

    with torch.no_grad():
        base = float((want - _residual_at_top(loaded.adapter, chunk, {})).norm())
        once = shortfall(plain)
        refined = shortfall(optimising(loaded, value_opt=replace(cfg, refine=1.0)))
    assert once < 0.5 * base  # the edit moves towards its targets ...
    assert once > 0.1 * base  # ... and falls short (measured: 0.21 of the way left)
    assert refined < 0.5 * once  # measured: 0.24 of the plain spread's shortfall
    with pytest.raises(ValueError, match="refine"):
        ValueOptConfig(refine=-1.0)


def test_residual_hook_handles_tuple_outputs() -> None:
    t = torch.ones(2, 3, 4)
    assert _block_output(t) is t
    assert _block_output((t, None)) is t


def test_optimising_checkpoint_has_no_hypernetwork(tmp_path: Path) -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded)
    with pytest.raises(NoHyperNetworkError):
        _ = editor.nets
    path = save_editor(tmp_path / "opt", editor, {"note": "test"})
    assert not (path / "editor.safetensors").exists()
    again = MalmenEditor.from_checkpoint(path, loaded)
    assert again.config.values == "optimise"
    assert again.config.value_opt == OPT
    assert not again.has_hypernet
    assert again.checkpoint_sha256  # of config.json
    # a partial override of the optimisation settings keeps the rest of the checkpoint's
    tuned = MalmenEditor.from_checkpoint(path, loaded, value_opt={"steps": 7})
    assert tuned.config.value_opt == replace(OPT, steps=7)
    # a hyper-network editor's checkpoint without its weights is refused
    cfg = (path / "config.json").read_text().replace('"optimise"', '"hypernet"')
    (path / "config.json").write_text(cfg)
    from editor_core.checkpoint import write_manifest

    write_manifest(path)
    with pytest.raises(CheckpointError, match=r"editor\.safetensors"):
        MalmenEditor.from_checkpoint(path, loaded)
    with pytest.raises(NoHyperNetworkError):
        MalmenEditor(loaded.adapter, loaded.tokenizer, None, EditorConfig())


def test_train_command_writes_an_optimising_editor(tmp_path: Path, tiny_dir: Path) -> None:
    """`factpatch train --values optimise`: no meta-training, a prior with a tail, a
    checkpoint that loads and edits (the tiny model stands in for a real one)."""
    import json

    from editor_core.config import ModelSpec
    from editor_core.loading import load_model
    from service.cli import main

    facts = tmp_path / "train.jsonl"
    lines = [
        {"prompt": r.prompt, "target": r.target, "subject": r.subject, "true_answer": "paris"}
        for r in distinct_subject_facts(6, seed=4)
    ]
    facts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "editor"
    argv = ["train", "--values", "optimise", "--model", str(tiny_dir), "--layers", "0,1"]
    argv += ["--data", str(facts), "--preserve", "10", "--prior-rank", "8", "--out", str(out)]
    argv += ["--value-context", "Q: {prompt}? A:"]
    assert main(argv) == 0
    assert not (out / "editor.safetensors").exists()
    loaded = load_model(ModelSpec(source=str(tiny_dir), layers=(0, 1), dtype="float32"))
    editor = MalmenEditor.from_checkpoint(out, loaded)
    assert editor.config.values == "optimise" and editor.config.key_position == "subject"
    assert editor.config.preserve == 10 and editor.key_prior is not None
    assert editor.config.value_opt.prefixes == ("", "Q: {prompt}? A:")
    assert set(editor.key_prior.tail) == set(loaded.adapter.names)  # rank 8 < d_in: a tail
    delta = editor.compute_delta(distinct_subject_facts(2, seed=9))
    assert set(delta.shifts) == set(loaded.adapter.names)


def test_joint_respread_is_one_spread_over_every_live_edit() -> None:
    """Joint mode keeps each edit's residual target (per fact, independent of batch-mates)
    and re-spreads all of them from the base weights: two batches added one after the other
    give the weights of one spread over both, which summing each batch's own rows does not."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(6, seed=4)
    a, b = reqs[:3], reqs[3:]
    editor = optimising(loaded, value_opt=replace(OPT, bf16=False))
    assert editor.respreads
    za, zb = editor.residual_targets(a).z, editor.residual_targets(b).z
    assert za.shape == (3, len(OPT.prefixes), loaded.model.config.hidden_size)
    together = editor.residual_targets(reqs).z
    torch.testing.assert_close(torch.cat([za, zb]), together, rtol=1e-4, atol=1e-4)

    respread = editor.solve(editor.joint_rows(reqs, torch.cat([za, zb])))
    at_once = editor.compute_delta(reqs).shifts
    for n, s in at_once.items():
        torch.testing.assert_close(respread[n], s, rtol=1e-3, atol=1e-5)

    ledger = EditLedger()  # the summed per-batch rows: a different (lower-layer) split
    for batch in (a, b):
        for i, r in enumerate(split_rows(editor.compute_rows(batch), len(batch))):
            ledger.add(f"{batch[i].prompt}", batch[i].prompt, r)
    summed = ledger.solve(editor.lambdas(), editor.config.solve_dtype, editor.priors())
    hi = loaded.adapter.names[-1]
    assert not torch.allclose(summed[hi], at_once[hi], rtol=1e-2, atol=1e-4)


def test_spread_rows_refuse_targets_of_another_shape() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(2, seed=4)
    editor = optimising(loaded)
    z = editor.residual_targets(reqs).z
    with pytest.raises(ValueError, match="do not fit 1 requests"):
        editor.spread_rows(reqs[:1], z)
    editor2 = optimising(loaded, value_opt=replace(OPT, prefixes=("", "A. ")))
    with pytest.raises(ValueError, match="2 contexts × 1 keyed tokens"):
        editor2.spread_rows(reqs, z)
    editor3 = optimising(loaded, value_opt=replace(OPT, subject_tokens=(-1, -2)))
    with pytest.raises(ValueError, match="1 contexts × 2 keyed tokens"):
        editor3.spread_rows(reqs, z)


def test_eta_scale_is_reported_inert_for_optimised_values(caplog: pytest.LogCaptureFixture) -> None:
    loaded = tiny_loaded(layers=2, edit=(1,))
    with caplog.at_level("WARNING", logger="editor_core.editor"):
        optimising(loaded)
    assert "eta_scale" not in caplog.text
    with caplog.at_level("WARNING", logger="editor_core.editor"):
        optimising(loaded, eta_scale=0.5)
    assert "eta_scale=0.5 has no effect" in caplog.text


def test_sequential_joint_sweep_respreads_from_the_base_weights() -> None:
    """The eval's joint sweep with a re-spreading editor: after the second batch the model
    holds one spread over both batches' targets (found on the base weights), and the base
    weights are back afterwards.  Scoring only after batch 2 skips batch 1's spread."""
    from editor_core.data import Fact, LocalityPrompt
    from editor_core.evaluate import prepare_locality, requests_of, sample_facts
    from editor_core.sweeps import run_sequential

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    with torch.no_grad():  # sharpened, keyed at the last token: edits land (first test)
        loaded.model.get_output_embeddings().weight.mul_(30.0)
    facts_ = [Fact(f"f{i}", r.prompt, r.target.split()[0]) for i, r in enumerate(facts(4, seed=13))]
    editor = optimising(loaded, value_opt=replace(OPT, bf16=False))
    pool = prepare_locality(loaded.model, loaded.tokenizer, [LocalityPrompt("The sky is")])
    before = model_state(loaded.model)
    history = run_sequential(
        loaded, editor, "joint", facts_, 2, 2, pool, pool, seed=0, full_every=-1, score_at=[2]
    )
    for (n, a), b in zip(model_state(loaded.model).items(), before.values(), strict=True):
        assert torch.equal(a[0], b[0]), n
    chosen = sample_facts(facts_, 4, 0) or []  # the sweep's order
    first, second = requests_of(chosen[:2]), requests_of(chosen[2:])
    z = torch.cat([editor.residual_targets(first).z, editor.residual_targets(second).z])
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, editor.solve(editor.joint_rows(first + second, z)), masters)
    try:
        es = token_accuracy(loaded.model, loaded.tokenizer, first, 8)
    finally:
        restore(loaded.adapter, masters)
    assert [h["edits"] for h in history] == [4]  # scored (and spread) after batch 2 only
    assert sum(es) > 0  # the edits land, so the comparison means something
    assert history[0]["es_first_batch"] == pytest.approx(sum(es) / len(es))


def test_subject_groups_keep_first_appearance_order() -> None:
    reqs = [
        EditRequest("A p is", "x", "A"),
        EditRequest("B p is", "x", "B"),
        EditRequest("A q is", "y", " A "),  # the same subject, padded
        EditRequest("no subject", "z"),
        EditRequest("also none", "z", "  "),
        EditRequest("B q is", "y", "B"),
    ]
    assert subject_groups(reqs) == [[0, 2], [1, 5], [3], [4]]


def test_facts_of_one_subject_share_their_residual_change() -> None:
    """Two facts about one subject key on (nearly) the same vector; one δ is optimised for
    both, whatever the chunking, and the request order is kept.  Without grouping each
    fact gets its own δ."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    base = distinct_subject_facts(4, seed=5)
    s = base[0].subject or ""
    second = EditRequest(f"Everyone knows that {s} likes", "bread", s)  # same subject
    reqs = [base[0], base[1], base[2], second, base[3]]
    cfg = replace(OPT, bf16=False, steps=5)
    z0 = optimising(loaded, value_opt=replace(cfg, steps=0)).residual_targets(reqs).z
    grouped = optimising(loaded, value_opt=cfg).residual_targets(reqs)
    delta = grouped.z - z0  # (5, n_var, H)
    torch.testing.assert_close(delta[0], delta[3])
    assert grouped.steps_taken[0] == grouped.steps_taken[3]
    for i in (1, 2, 4):
        assert not torch.allclose(delta[0], delta[i], atol=1e-4)
    small = optimising(loaded, value_opt=replace(cfg, batch_facts=2)).residual_targets(reqs)
    torch.testing.assert_close(small.z, grouped.z, rtol=1e-4, atol=1e-4)
    alone = optimising(loaded, value_opt=replace(cfg, group_subjects=False)).residual_targets(reqs)
    d_alone = alone.z - z0
    assert not torch.allclose(d_alone[0], d_alone[3], atol=1e-4)
    torch.testing.assert_close(d_alone[1], delta[1], rtol=1e-4, atol=1e-4)  # singletons agree


def test_anchors_join_every_layer_of_the_spread() -> None:
    """Anchor rows (other names in the subject's place, value 0) take part in each layer's
    solve of the spread, not only in the final one: what the upper layer is asked for
    sees them, and the shifts move the anchors' keys less."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(3, seed=6)
    plain = optimising(loaded, value_opt=replace(OPT, bf16=False))
    anchored = optimising(loaded, value_opt=replace(OPT, bf16=False), anchors=4, anchor_weight=10.0)
    z = plain.residual_targets(reqs).z
    rows = anchored.joint_rows(reqs, z)
    a_rows = anchored.anchor_rows(reqs)
    lo = loaded.adapter.names[0]
    assert rows[lo].keys.shape[0] == len(reqs) + a_rows[lo].keys.shape[0] > len(reqs)
    # the spread saw the anchors: the upper layer is asked for what the anchored lower
    # layer's shift left missing, not what an unanchored one would have
    hi = loaded.adapter.names[-1]
    unanchored_spread = anchored.spread_rows(reqs, z)
    torch.testing.assert_close(unanchored_spread[lo].values, rows[lo].values[: len(reqs)])
    assert not torch.allclose(unanchored_spread[hi].values, rows[hi].values[: len(reqs)], atol=1e-4)
    with_a, without = anchored.solve(rows), plain.solve(plain.joint_rows(reqs, z))
    for n in loaded.adapter.names:
        k = a_rows[n].keys
        assert (k @ with_a[n]).norm() < 0.5 * (k @ without[n]).norm(), n


def test_prior_locality_pairs_split_free_text_at_its_last_word(tmp_path: Path) -> None:
    """--prior-locality adds a locality file's ordinary text to the prior's corpus: prompts
    with an answer keep it, free prompts are split at their last word (every token's key is
    read either way), one-word prompts are skipped."""
    import json

    from service.commands.train import locality_corpus

    path = tmp_path / "loc.jsonl"
    rows = [
        {"prompt": "Bryan opened the letter and"},
        {"prompt": "The opposite of fast is", "answer": "slow"},
        {"prompt": "Hello"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = sorted((r.prompt, r.target) for r in locality_corpus(path, 10, seed=0))
    assert pairs == [("Bryan opened the letter", "and"), ("The opposite of fast is", "slow")]
    assert len(locality_corpus(path, 1, seed=0)) == 1


def test_prior_weight_grows_with_the_edits_in_one_solve() -> None:
    """`preserve_ref_edits`: μ·max(1, N / ref) for a solve of N facts — in the spread's
    per-layer solves and in the final solve alike, so a joint re-spread still reproduces
    the simultaneous edit; below ref nothing changes."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=2)
    prior = low_rank_prior(
        {m.name: torch.eye(m.d_in) for m in loaded.adapter.modules}, rank=4, tail=True
    )
    vo = replace(OPT, bf16=False)
    fixed = optimising(loaded, value_opt=vo, preserve=0.5)
    assert fixed.preserve_weight(4) == 0.0  # no prior: the solve is plain ridge
    fixed.key_prior = prior
    scaled = optimising(loaded, value_opt=vo, preserve=0.5, preserve_ref_edits=2)
    scaled.key_prior = prior
    assert scaled.preserve_weight(None) == 0.5 and scaled.preserve_weight(1) == 0.5
    assert scaled.preserve_weight(4) == 1.0 and fixed.preserve_weight(4) == 0.5
    z = fixed.residual_targets(reqs).z  # targets do not depend on μ
    hi = loaded.adapter.names[-1]
    base = fixed.solve(fixed.joint_rows(reqs, z), len(reqs))
    grown = scaled.solve(scaled.joint_rows(reqs, z), len(reqs))
    assert grown[hi].norm() < base[hi].norm()  # the stronger prior holds the edit back
    torch.testing.assert_close(
        grown[hi], scaled.compute_delta(reqs).shifts[hi], rtol=1e-3, atol=1e-5
    )
    two = reqs[:2]  # at N = ref the two editors agree
    torch.testing.assert_close(
        scaled.compute_delta(two).shifts[hi], fixed.compute_delta(two).shifts[hi]
    )


def test_prior_matrices_are_built_once_whatever_the_edit_count(monkeypatch) -> None:
    """μ changes with N under `preserve_ref_edits` (every joint version): the dense
    E[k kᵀ] is built once per prior and only rescaled; a new prior is rebuilt."""
    from editor_core.preserve import KeyPrior

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded, preserve=0.5, preserve_ref_edits=2)
    moments = {m.name: torch.eye(m.d_in) for m in loaded.adapter.modules}
    editor.key_prior = low_rank_prior(moments, rank=4, tail=True)
    built: list[str] = []
    real = KeyPrior.matrix
    monkeypatch.setattr(KeyPrior, "matrix", lambda self, n: built.append(n) or real(self, n))
    names = loaded.adapter.names
    at2, at8 = editor.priors(2), editor.priors(8)
    for n in names:
        torch.testing.assert_close(at8[n], 4 * at2[n])  # μ 0.5 → 2.0
    assert built == list(names)
    editor.key_prior = editor.key_prior.truncated(2)
    editor.priors(8)
    assert built == list(names) * 2


def test_each_keyed_subject_token_gets_its_own_change() -> None:
    """subject_tokens (-1, -2): one δ per keyed token, optimised together; a one-token
    subject has one token to key, so its second slot asks for no change."""
    with pytest.raises(ValueError, match="distinct"):
        ValueOptConfig(subject_tokens=(-1, -1))
    with pytest.raises(ValueError, match="at least one"):
        ValueOptConfig(subject_tokens=())
    assert ValueOptConfig(subject_tokens=[-1, -2], prefixes=["", "A "]).n_slots == 4  # JSON
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = [
        EditRequest("The paris tower of located is", "london", "paris tower"),
        EditRequest("The london is located in", "paris", "london"),
    ]
    two = replace(OPT, subject_tokens=(-1, -2), steps=5, stop_loss=0.0)
    found = optimising(loaded, value_opt=two).residual_targets(reqs)
    base = optimising(loaded, value_opt=replace(two, steps=0)).residual_targets(reqs)
    assert found.z.shape == (2, 2, loaded.model.config.hidden_size)  # 1 context × 2 tokens
    moved = (found.z - base.z).norm(dim=2)  # (fact, slot)
    assert bool((moved[0] > 0).all())  # both of "paris tower"'s tokens move
    assert float(moved[1, 0]) > 0 and float(moved[1, 1]) == 0.0  # "london": one token


def test_value_clamp_shrinks_with_the_edits_in_one_solve() -> None:
    """`max_norm_ref_edits`: the clamp on ‖δ‖/‖residual‖ is max_norm up to ref edits in one
    solve, then max_norm_per_doubling less per doubling, never below max_norm_min; the
    targets of a request set are clamped for a solve of its own size unless told the
    solve's size (joint mode: every live edit)."""
    rule = ValueOptConfig(max_norm=2.0, max_norm_ref_edits=64)
    assert rule.clamp_for(None) == 2.0 and rule.clamp_for(16) == 2.0 and rule.clamp_for(64) == 2.0
    assert rule.clamp_for(128) == 1.75 and rule.clamp_for(256) == 1.5
    assert rule.clamp_for(65) == 1.75 and rule.clamp_for(129) == 1.5  # whole doublings begun
    low = ValueOptConfig(max_norm=2.0, max_norm_ref_edits=64, max_norm_min=0.5)
    steps = [low.clamp_for(n) for n in (64, 65, 128, 129, 256, 257, 512, 513)]
    assert steps == [2.0, 1.75, 1.75, 1.5, 1.5, 1.25, 1.25, 1.0]
    assert rule.clamp_for(1024) == 1.5  # the floor
    assert ValueOptConfig(max_norm=2.0).clamp_for(1024) == 2.0  # no rule: fixed
    fixed = ValueOptConfig(max_norm=1.0, max_norm_ref_edits=64)  # below the floor: fixed
    assert fixed.clamp_for(16) == 1.0 and fixed.clamp_for(1024) == 1.0
    for bad in ({"max_norm_min": 0.0}, {"max_norm_per_doubling": -1.0}, {"max_norm_ref_edits": 0}):
        with pytest.raises(ValueError):
            ValueOptConfig(**bad)  # type: ignore[arg-type]

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=3)
    tight = replace(
        OPT,
        bf16=False,
        max_norm=1.0,
        max_norm_ref_edits=2,
        max_norm_per_doubling=0.5,
        max_norm_min=0.05,
    )
    editor = optimising(loaded, value_opt=tight)
    own = editor.residual_targets(reqs)  # a solve of 4: clamp 0.5
    assert float(own.delta_ratio.max()) <= 0.5 + 1e-4
    assert float(own.delta_ratio.max()) > 0.45  # at the bound: the tiny model needs more
    many = editor.residual_targets(reqs, n_edits=64)  # 5 doublings past 2: the floor
    assert float(many.delta_ratio.max()) <= 0.05 + 1e-4
    few = editor.residual_targets(reqs[:2], n_edits=2)  # at ref: max_norm
    assert 0.5 < float(few.delta_ratio.max()) <= 1.0 + 1e-4


def test_essence_penalty_keeps_the_subject_alone_closer_to_the_unedited_model() -> None:
    """`essence_weight` (ROME's essence drift): each δ is also applied in "{subject} is a"
    and the KL of the next token there from the unedited model's joins its loss, so the
    edited model drifts less on the subject alone."""
    with pytest.raises(ValueError, match="slot"):
        ValueOptConfig(essence_weight=0.1, essence_prompts=("{subject} is a", "no subject"))
    assert ValueOptConfig(essence_prompts=["{subject} is a"]).essence_prompts == ("{subject} is a",)
    with pytest.raises(ValueError, match="essence_weight"):
        ValueOptConfig(essence_weight=-1.0)
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=2)
    tok = loaded.tokenizer

    def essence(subject: str) -> torch.Tensor:
        ids = tok(f"{subject} is a", return_tensors="pt").input_ids
        with torch.no_grad():
            return torch.log_softmax(loaded.model(ids).logits[0, -1].float(), -1)

    base = {r.subject: essence(r.subject or "") for r in reqs}

    def drift(weight: float) -> float:
        editor = optimising(loaded, value_opt=replace(OPT, bf16=False, essence_weight=weight))
        masters = snapshot(loaded.adapter)
        try:
            apply_delta(loaded.adapter, editor.compute_delta(reqs), masters)
            kls = [float((b.exp() * (b - essence(s or ""))).sum()) for s, b in base.items()]
        finally:
            restore(loaded.adapter, masters)
        return sum(kls) / len(kls)

    free, held = drift(0.0), drift(10.0)
    assert free > 0 and held < 0.5 * free


def test_keep_prompts_hold_the_subjects_other_facts_closer_to_the_unedited_model() -> None:
    """`keep_weight`: each δ is also applied in its request's own keep prompts (the
    subject's other facts) and the KL of the next token there from the unedited model's
    joins its loss, so the edited model drifts less on exactly those prompts."""
    with pytest.raises(ValueError, match="keep_weight"):
        ValueOptConfig(keep_weight=-1.0)
    with pytest.raises(ValueError, match="keep_max"):
        ValueOptConfig(keep_max=-1)
    assert EditRequest("a", "b", "a", keep=["a c"]).keep == ("a c",)  # a list from JSON
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    tok = loaded.tokenizer
    reqs = [
        replace(r, keep=(f"{W[3]} {r.subject}", f"{r.subject} {W[5]}"))
        for r in distinct_subject_facts(4, seed=2)
    ]

    def logprobs(prompt: str) -> torch.Tensor:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            return torch.log_softmax(loaded.model(ids).logits[0, -1].float(), -1)

    base = {k: logprobs(k) for r in reqs for k in r.keep}

    def drift(weight: float, keep_max: int | None = None) -> float:
        vo = replace(OPT, bf16=False, keep_weight=weight, keep_max=keep_max)
        editor = optimising(loaded, value_opt=vo)
        masters = snapshot(loaded.adapter)
        try:
            apply_delta(loaded.adapter, editor.compute_delta(reqs), masters)
            kls = [float((b.exp() * (b - logprobs(k))).sum()) for k, b in base.items()]
        finally:
            restore(loaded.adapter, masters)
        return sum(kls) / len(kls)

    free, held = drift(0.0), drift(10.0)
    assert free > 0 and held < 0.5 * free
    assert drift(10.0, keep_max=0) == pytest.approx(free)  # no prompt used: no penalty


def two_word_subject_facts(n: int) -> list[EditRequest]:
    """ "The R of S1 S2 is T" with the two-word subject S1 S2 named (distinct subjects)."""
    return [
        EditRequest(
            f"The {W[1]} of {W[5 + i]} {W[11 + i]} is", W[22 + i], f"{W[5 + i]} {W[11 + i]}"
        )
        for i in range(n)
    ]


def test_lookalike_prompts_ask_the_edits_question_of_a_name_ending_like_its_subject() -> None:
    """`_lookalike_texts`: per request, `lookalikes` prompts with another first word before
    its subject's last word, keyed at that name; none for a one-word subject, and none that
    names a subject edited beside it."""
    with pytest.raises(ValueError, match="lookalike"):
        ValueOptConfig(lookalike_weight=-1.0)
    with pytest.raises(ValueError, match="lookalike"):
        ValueOptConfig(lookalikes=-1)
    cfg = replace(OPT, lookalike_weight=1.0, lookalikes=3)
    reqs = [
        EditRequest(
            "Where is Calderon College? Calderon College is in", "Rome", "Calderon College"
        ),
        EditRequest("The capital of France is", "Rome", "France"),
        EditRequest("The motto of X is", "Y", None),
    ]
    texts = _lookalike_texts(reqs, cfg)
    assert texts == _lookalike_texts(reqs, cfg)  # a hash of the request, not a random draw
    assert [len(t) for t in texts] == [3, 0, 0]
    for prompt, name in texts[0]:
        assert name.endswith(" College") and name != "Calderon College"
        assert prompt == f"Where is {name}? {name} is in"
    # a look-alike that is itself edited in the chunk is not asked to keep its answer
    taken = texts[0][0][1]
    both = [reqs[0], EditRequest(f"{taken} is in", "Oslo", taken)]
    assert taken not in {name for _p, name in _lookalike_texts(both, cfg)[0]}


def test_lookalike_penalty_holds_the_lookalikes_closer_to_the_unedited_model() -> None:
    """`lookalike_weight`: each δ is also applied at a look-alike subject's tokens in the
    edit's prompt and the KL of the next token there joins its loss, so the edited model —
    whose solve reaches the look-alike through the key it shares — drifts less there, and
    the edits still land."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    tok = loaded.tokenizer
    with torch.no_grad():  # sharper next-token distributions: edits land, drift shows
        loaded.model.get_output_embeddings().weight.mul_(30.0)
    reqs = two_word_subject_facts(4)
    cfg = replace(OPT, bf16=False, lookalikes=2)
    prompts = [
        p
        for pairs in _lookalike_texts(reqs, replace(cfg, lookalike_weight=1.0))
        for p, _name in pairs
    ]
    assert len(prompts) == 8
    (look,) = _encode_chunk(
        loaded.adapter, tok, reqs, replace(cfg, lookalike_weight=2.0), None
    ).drift
    assert look.weight == 2.0 and look.fact.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]

    def logprobs(prompt: str) -> torch.Tensor:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            return torch.log_softmax(loaded.model(ids).logits[0, -1].float(), -1)

    base = {p: logprobs(p) for p in prompts}

    def target_logprob(r: EditRequest) -> float:
        first = tok(" " + r.target, add_special_tokens=False).input_ids[0]
        return float(logprobs(r.prompt)[first])

    unedited = sum(target_logprob(r) for r in reqs) / len(reqs)

    def edited(weight: float) -> tuple[float, float]:
        """(mean KL at the look-alike prompts, mean rise of the target's log-probability)."""
        editor = optimising(loaded, value_opt=replace(cfg, lookalike_weight=weight))
        masters = snapshot(loaded.adapter)
        try:
            apply_delta(loaded.adapter, editor.compute_delta(reqs), masters)
            kls = [float((b.exp() * (b - logprobs(p))).sum()) for p, b in base.items()]
            rise = sum(target_logprob(r) for r in reqs) / len(reqs) - unedited
        finally:
            restore(loaded.adapter, masters)
        return sum(kls) / len(kls), rise

    # (a random tiny model barely reads a change at an earlier token, so its edits do not
    # land outright — `test_optimised_edits_land_and_the_model_is_restored` — but they move)
    (free, rise_free), (held, rise_held) = edited(0.0), edited(10.0)
    assert free > 0 and held < 0.5 * free
    assert rise_free > 1.0 and rise_held > 0.5 * rise_free


def test_keep_prompts_that_another_edit_of_the_subject_changes_are_dropped() -> None:
    """One δ per subject group: a keep prompt that a request naming the same subject edits
    cannot be kept, and a prompt that does not contain the request's subject has no δ to
    hold; the rest are encoded, each with its request and the penalty's weight."""
    loaded = tiny_loaded(layers=2, edit=(0,))
    s, t = W[7], W[8]
    reqs = [
        EditRequest(f"The {W[1]} of {s} is", W[2], s, keep=(f"The {W[3]} of {s} is", "no name")),
        EditRequest(f"The {W[3]} of {s} is", W[4], s, keep=(f"The {W[1]} of {s} is",)),
        EditRequest(f"The {W[1]} of {t} is", W[2], t, keep=(f"The {W[3]} of {s} is",)),
        EditRequest(f"The {W[1]} of {t} is", W[2], t, keep=(f"The {W[5]} of {t} is", "x", "y")),
    ]
    cfg = replace(OPT, keep_weight=1.5, keep_max=1)
    (keep,) = _encode_chunk(loaded.adapter, loaded.tokenizer, reqs, cfg, None).drift
    assert keep.fact.tolist() == [3] and keep.weight == 1.5
    assert keep.input_ids.shape[0] == 1  # keep_max: the first prompt only
    both = replace(cfg, essence_weight=0.5, keep_max=None)
    ess, keep = _encode_chunk(loaded.adapter, loaded.tokenizer, reqs, both, None).drift
    assert ess.weight == 0.5 and ess.fact.tolist() == [0, 1, 2, 3]  # "{subject} is a" each
    assert keep.fact.tolist() == [3]  # "x" and "y" do not name the subject


def test_paraphrases_join_the_value_loss_but_give_no_rows() -> None:
    """`paraphrase_max`: a request's paraphrases that name its subject are encoded with its
    target and keyed at its subject; they raise the edit's accuracy on them (the δ is
    optimised for them too) and leave the rows' shape alone."""
    with pytest.raises(ValueError, match="paraphrase_max"):
        ValueOptConfig(paraphrase_max=-1)
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    tok = loaded.tokenizer
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.mul_(30.0)
    base = distinct_subject_facts(4, seed=3)
    reqs = [
        replace(r, paraphrases=(f"{W[9]} {r.subject}", f"{r.subject} {W[10]}", "no subject"))
        for r in base
    ]
    cfg = replace(OPT, bf16=False, paraphrase_max=2)
    also = _encode_chunk(loaded.adapter, tok, reqs, cfg, None).also
    assert also is not None and also.fact.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert also.count.tolist() == [2, 2, 2, 2]
    one = _encode_chunk(loaded.adapter, tok, reqs, replace(cfg, paraphrase_max=1), None).also
    assert one is not None and one.fact.tolist() == [0, 1, 2, 3]
    para = [EditRequest(p, r.target, r.subject) for r in reqs for p in r.paraphrases[:2]]

    def accuracy(vo: ValueOptConfig) -> tuple[float, int]:
        editor = optimising(loaded, value_opt=vo)
        masters = snapshot(loaded.adapter)
        try:
            delta = editor.compute_delta(reqs)
            apply_delta(loaded.adapter, delta, masters)
            acc = token_accuracy(loaded.model, tok, para, 8)
        finally:
            restore(loaded.adapter, masters)
        return sum(acc) / len(acc), next(iter(delta.rows.values())).keys.shape[0]

    (without, rows), (with_them, rows_with) = (
        accuracy(replace(cfg, paraphrase_max=0)),
        accuracy(cfg),
    )
    assert rows_with == rows  # paraphrases give no rows
    assert with_them > without


def test_paraphrase_keys_average_the_paraphrases_into_each_fact_row() -> None:
    """`paraphrase_keys` w: each fact's row at every layer is the weighted mean over its
    contexts and its paraphrases — at the lowest layer (nothing below it shifts) the key is
    (k_prompt + w·Σ k_paraphrase) / (1 + w·count) and the value is the δ's share there,
    as without them; the residual targets are the same, and the rows still re-solve to the
    spread's shifts (joint mode)."""
    with pytest.raises(ValueError, match="paraphrase_keys"):
        ValueOptConfig(paraphrase_keys=-0.5)
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    base = distinct_subject_facts(4, seed=3)
    reqs = [
        replace(r, paraphrases=(f"{W[9]} {r.subject}", f"{r.subject} {W[10]}", "no subject"))
        for r in base
    ]
    cfg = replace(OPT, bf16=False, paraphrase_max=2)
    plain = optimising(loaded, value_opt=cfg)
    z = plain.residual_targets(reqs).z
    lo, hi = loaded.adapter.names
    without = plain.spread_rows(reqs, z)
    para = [EditRequest(p, r.target, r.subject) for r in reqs for p in r.paraphrases[:2]]
    para_keys = (
        optimising(loaded, value_opt=replace(cfg, paraphrase_max=0))
        .spread_rows(para, torch.zeros(len(para), 1, z.shape[-1]))[lo]
        .keys.view(len(reqs), 2, -1)
    )
    for w in (1.0, 0.5):
        editor = optimising(loaded, value_opt=replace(cfg, paraphrase_keys=w))
        rows = editor.spread_rows(reqs, z)
        want = (without[lo].keys + w * para_keys.sum(1)) / (1 + 2 * w)
        torch.testing.assert_close(rows[lo].keys, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rows[lo].values, without[lo].values, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(rows[hi].keys, without[hi].keys)
        assert_rows_resolve(editor, reqs)


def test_held_directions_carry_no_change() -> None:
    """`hold_rank` r: every shift lies outside the prior's top r eigen-directions (the
    layer's output on a key along them does not move), in the spread's per-layer solves and
    in joint mode's solve alike; without it the same edit moves them.  It needs a float64
    solve and no more directions than the prior stores, and acts with μ = 0 too."""
    with pytest.raises(ValueError, match="float64"):
        EditorConfig(values="optimise", hold_rank=2)
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(4, seed=3)
    gen = torch.Generator().manual_seed(0)
    moments = {}
    for m in loaded.adapter.modules:  # distinct eigenvalues: a well-defined top
        a = torch.randn(m.d_in, m.d_in, generator=gen)
        moments[m.name] = a @ a.T / m.d_in
    prior = low_rank_prior(moments, rank=6, tail=True)
    vo = replace(OPT, bf16=False)
    kw = {"value_opt": vo, "preserve": 0.5, "solve_dtype": "float64"}
    free = optimising(loaded, **kw)
    held = optimising(loaded, hold_rank=3, **kw)
    free.key_prior = held.key_prior = prior
    z = free.residual_targets(reqs).z  # targets do not depend on the solve
    shifts = {e: e.compute_delta(reqs).shifts for e in (free, held)}
    for name in loaded.adapter.names:
        top = prior.basis[name][:, -3:].double()  # (d_in, 3)
        s_free, s_held = shifts[free][name].double(), shifts[held][name].double()
        assert (top.T @ s_free).norm() > 0.01 * s_free.norm()
        assert (top.T @ s_held).norm() < 1e-5 * s_held.norm()
        assert s_held.norm() > 0.1 * s_free.norm()  # the edit is made elsewhere
    joint = held.solve(held.joint_rows(reqs, z), len(reqs))
    for name in loaded.adapter.names:
        torch.testing.assert_close(joint[name], shifts[held][name], rtol=1e-3, atol=1e-6)
    pure = optimising(loaded, hold_rank=3, **{**kw, "preserve": 0.0})
    pure.key_prior = prior
    assert all(p is not None for p in pure.priors(4).values())
    pure.config = replace(pure.config, hold_rank=7)
    with pytest.raises(ValueError, match="exceeds the 6 directions"):
        pure.priors(4)


def test_template_pins_hold_the_relation_words_still() -> None:
    """pin_weight: each edit's prompt tokens other than its subject's join every solve as
    zero-value rows (owned by the edit, keys scaled by √weight), so the relation's words
    move less while the edit is still made at the subject."""
    from editor_core.encoding import encode_edits, subject_token_indices

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    tok = loaded.tokenizer
    reqs = distinct_subject_facts(3, seed=6)
    reqs[1] = replace(reqs[1], subject=None)  # no subject: no pins for this one
    batch = encode_edits(tok, reqs, key_position="template")
    for b, r in enumerate(reqs):
        n_prompt = len(tok(r.prompt, add_special_tokens=True)["input_ids"])
        subject = subject_token_indices(tok, r.prompt, r.subject)
        want = [i for i in range(n_prompt) if i not in subject] if subject else []
        assert batch.key_mask is not None and batch.key_mask[b].nonzero()[:, 0].tolist() == want
    vo = replace(OPT, bf16=False)
    plain, pinned = (
        optimising(loaded, value_opt=vo),
        optimising(loaded, value_opt=vo, pin_weight=4.0),
    )
    pins, one = (
        pinned.anchor_rows(reqs),
        optimising(loaded, value_opt=vo, pin_weight=1.0).anchor_rows(reqs),
    )
    lo = loaded.adapter.names[0]
    counts = torch.bincount(pins[lo].owner, minlength=len(reqs)).tolist()
    assert counts == [int(m.sum()) for m in batch.key_mask] and counts[1] == 0
    assert (pins[lo].values == 0).all()
    torch.testing.assert_close(pins[lo].keys, 2 * one[lo].keys)  # √4
    z = plain.residual_targets([reqs[0], reqs[2]]).z
    kept = [reqs[0], reqs[2]]
    free, held = plain.solve(plain.joint_rows(kept, z)), pinned.solve(pinned.joint_rows(kept, z))
    k_pin = pinned.anchor_rows(kept)
    for n in loaded.adapter.names:
        k = k_pin[n].keys
        assert (k @ held[n]).norm() < 0.5 * (k @ free[n]).norm(), n
    with pytest.raises(ValueError, match="subject-keyed"):
        EditorConfig(pin_weight=1.0)  # the hyper-network editor keys where it predicts
