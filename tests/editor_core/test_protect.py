"""Protected prompts (editor_core/protect.py): a deployment's prompts held in every solve."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from editor_core import EditRequest
from editor_core.data.formats import LocalityPrompt
from editor_core.editor import EditorConfig, EditRows, MalmenEditor
from editor_core.evaluate import greedy_tokens
from editor_core.hooks import iter_keys
from editor_core.joint import EditLedger, split_rows
from editor_core.protect import protected_set, texts_sha256
from editor_core.solve import ridge_solve
from tests.editor_core.test_editor import editor_for, facts, tiny_loaded
from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising
from tests.tiny import CORPUS_WORDS as W

PROTECTED = [
    LocalityPrompt(f"The {W[3]} {W[5]} of {W[7]} is", W[9]),
    LocalityPrompt(f"The {W[2]} {W[6]} of {W[8]} is"),  # no answer: its own continuation
    LocalityPrompt(f"A {W[11]} of {W[12]} {W[4]} was"),
]


def pin_rows(editor: MalmenEditor, texts: list[EditRequest], weight: float) -> dict[str, EditRows]:
    """The protected prompts written out as zero-value rows (every token, keys × √weight)."""
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in editor.adapter.names}
    for _owner, keys in iter_keys(editor.adapter, editor.tokenizer, texts, all_positions=True):
        for n in parts:
            parts[n].append(keys[n] * weight**0.5)
    out = {}
    for m in editor.adapter.modules:
        k = torch.cat(parts[m.name])
        out[m.name] = EditRows(k, k.new_zeros(k.shape[0], m.d_out), torch.zeros(len(k)).long())
    return out


def protected_keys(editor: MalmenEditor) -> dict[str, torch.Tensor]:
    texts = protected_set(editor.model, editor.tokenizer, PROTECTED).texts
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in editor.adapter.names}
    for _owner, keys in iter_keys(editor.adapter, editor.tokenizer, texts, all_positions=True):
        for n in parts:
            parts[n].append(keys[n])
    return {n: torch.cat(p) for n, p in parts.items()}


def test_texts_take_the_answer_or_the_models_own_continuation() -> None:
    loaded = tiny_loaded()
    tok = loaded.tokenizer
    held = protected_set(loaded.model, tok, PROTECTED)
    texts = held.texts
    assert texts[0] == EditRequest(PROTECTED[0].prompt, W[9])
    ids = list(tok(PROTECTED[1].prompt, add_special_tokens=True)["input_ids"])
    own = greedy_tokens(loaded.model, [ids], 4, tok.pad_token_id or 0)[0]
    assert texts[1].prompt == PROTECTED[1].prompt
    assert texts[1].target == tok.decode(own).strip() and texts[1].target
    assert texts_sha256(texts) == texts_sha256(list(texts))
    assert texts_sha256(texts) != texts_sha256(texts[::-1]) and held.sha256 == texts_sha256(texts)
    assert len(held) == 3 and held.record.base[1].tolist() == own  # the answers recorded


def test_protection_is_the_protected_prompts_as_zero_value_rows() -> None:
    """The Gram term `protect` adds gives the shifts of a solve over the edit rows plus
    every protected token as a zero-value row of weight w — in float64, to 1e-9."""
    loaded = tiny_loaded()
    loaded.model.double()
    w = 50.0
    editor = editor_for(loaded, protect_weight=w, protect_rounds=0, solve_dtype="float64")
    reqs = facts(5)
    rows = editor.compute_rows(reqs)
    held = editor.protect(PROTECTED)
    assert held is not None and len(held) == 3
    pins = pin_rows(editor, held.texts, w)
    got = editor.hold_protected(lambda: editor.solve(rows))
    assert editor.last_held == [0, 1, 2]
    held_delta, free = editor.compute_delta(reqs).shifts, editor.solve(rows)  # free: unheld
    for n, g in got.items():
        torch.testing.assert_close(held_delta[n], g)
        assert (free[n] - g).norm() > 0.05 * g.norm()
    lams = editor.lambdas()
    for n, r in rows.items():
        k = torch.cat([r.keys, pins[n].keys]).double()
        v = torch.cat([r.values, pins[n].values]).double()
        want = ridge_solve(k, v, lams[n], "float64")
        torch.testing.assert_close(got[n].double(), want.double(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["hypernet", "optimise"])
def test_protected_keys_barely_move(kind: str) -> None:
    """At a high weight the protected tokens' keys get almost none of the shift they get
    unprotected (what that costs the edits is measured on the real model: docs/results.md)."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    if kind == "hypernet":
        editor = editor_for(loaded, lambda_override=1e-3)
        reqs = facts(4)
    else:
        editor = optimising(loaded, value_opt=replace(OPT, bf16=False))
        reqs = distinct_subject_facts(4, seed=2)
    keys = protected_keys(editor)
    free = editor.compute_delta(reqs).shifts
    editor.config = replace(editor.config, protect_weight=1e4, protect_rounds=0)  # hold all
    editor.protect(PROTECTED)
    held = editor.compute_delta(reqs).shifts
    for n in editor.adapter.names:
        moved_free = (keys[n] @ free[n]).norm()
        moved_held = (keys[n] @ held[n]).norm()
        assert moved_held < 0.05 * moved_free, n
    # [] removes protection; weight 0 switches it off
    hi = editor.adapter.names[-1]
    editor.protect([])
    assert editor.protected is None
    torch.testing.assert_close(editor.compute_delta(reqs).shifts[hi], free[hi])
    editor.protect(PROTECTED)
    editor.config = replace(editor.config, protect_weight=0.0)
    torch.testing.assert_close(editor.compute_delta(reqs).shifts[hi], free[hi])


def test_joint_mode_keeps_protection_whatever_is_withdrawn() -> None:
    """The protected term belongs to no edit: a joint solve over any subset of the edits
    holds it, and equals the simultaneous solve of that subset."""
    loaded = tiny_loaded()
    editor = editor_for(loaded, lambda_override=1e-2, protect_weight=1e3, protect_rounds=0)
    editor.protect(PROTECTED)
    reqs = facts(4)
    ledger = EditLedger()
    for i, r in enumerate(split_rows(editor.compute_rows(reqs), len(reqs))):
        ledger.add(str(i), reqs[i].prompt, r)
    ledger.remove("1")
    ledger.remove("3")
    joint = editor.hold_protected(
        lambda: ledger.solve(editor.lambdas(), "float32", editor.priors(2))
    )
    at_once = editor.compute_delta([reqs[0], reqs[2]]).shifts
    keys = protected_keys(editor)
    for n, s in at_once.items():
        torch.testing.assert_close(joint[n], s, rtol=1e-3, atol=1e-5)
        assert (keys[n] @ joint[n]).norm() < 0.05 * joint[n].norm() * keys[n].norm()


def test_protect_weight_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="protect_weight"):
        EditorConfig(protect_weight=-1.0)


def test_a_protected_prompt_keeps_its_answer_where_an_edit_leaked_into_it() -> None:
    """The tiny model's case of the neighbour loss: editing "the capital town is" also
    moves "The river city is" to the new target.  Protected (weight 10), the river city
    keeps its continuation and both edits still land; of the two protected prompts only
    the one the edits would change is held (tests/service/test_flow_protect.py serves the
    same case)."""
    from editor_core.apply import apply_delta, restore, snapshot

    loaded = tiny_loaded()
    tok = loaded.tokenizer

    def said(prompt: str) -> str:
        ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
        return tok.decode(greedy_tokens(loaded.model, [ids], 2, tok.pad_token_id or 0)[0])

    river = "The river city is"
    base = said(river)
    reqs = [
        EditRequest("the capital town is", "london"),
        EditRequest("A small river city was", "tokyo"),
    ]
    out, held = {}, {}
    for w in (0.0, 10.0):
        editor = optimising(
            loaded,
            value_opt=replace(OPT, bf16=False, steps=30),
            protect_weight=w,
            protect_margin=0.0,  # the random tiny model is sure of nothing
        )
        editor.protect(
            [LocalityPrompt(river), LocalityPrompt("The Eiffel Tower is located in", "paris")]
        )
        masters = snapshot(loaded.adapter)
        apply_delta(loaded.adapter, editor.compute_delta(reqs), masters)
        out[w] = [said(r.prompt) for r in reqs] + [said(river)]
        held[w] = editor.last_held
        restore(loaded.adapter, masters)
    for w, (capital, small, _river) in out.items():
        assert capital.startswith(" london") and small.startswith(" tokyo"), (w, out[w], held)
    assert out[0.0][2].startswith(" london") and base != out[0.0][2]  # leaked
    assert out[10.0][2] == base  # held
    # held in rounds (the default): only the prompt the first solve changed, not the list
    assert held == {0.0: [], 10.0: [0]}


def test_changed_prompts_can_skip_near_ties() -> None:
    """A protected prompt counts as changed where its argmax moved at a position the
    unedited model was sure of (`protect_margin`); 0 counts every move."""
    from editor_core.evaluate import changed_prompts, prepare_locality

    loaded = tiny_loaded()
    loc = prepare_locality(loaded.model, loaded.tokenizer, PROTECTED)
    assert changed_prompts(loaded.model, loaded.tokenizer, loc) == []  # nothing edited
    loc.base[0] = loc.base[0].clone()
    loc.base[0][0] += 1  # as if the model had answered otherwise at prompt 0's first token
    loc.base[2] = loc.base[2].clone()
    loc.base[2][-1] += 1
    loc.margin[0] = torch.full_like(loc.margin[0], 0.2)  # a near-tie there
    loc.margin[2] = torch.full_like(loc.margin[2], 3.0)  # a sure token
    assert changed_prompts(loaded.model, loaded.tokenizer, loc) == [0, 2]
    assert changed_prompts(loaded.model, loaded.tokenizer, loc, min_margin=1.0) == [2]
    with pytest.raises(ValueError, match="protect_margin"):
        EditorConfig(protect_margin=-0.5)


def test_a_list_that_cannot_be_read_leaves_the_one_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker re-reads a changed list before a batch; if reading fails, the editor still
    holds the list it had (and [] still removes protection)."""
    import editor_core.editor as editor_module

    editor = editor_for(tiny_loaded())
    held = editor.protect(PROTECTED[:1])
    assert held is not None

    def unreadable(*_a: object, **_k: object) -> None:
        raise RuntimeError("cannot read the list")

    monkeypatch.setattr(editor_module, "protected_set", unreadable)
    with pytest.raises(RuntimeError, match="cannot read"):
        editor.protect(PROTECTED, same_weights=True)
    assert editor.protected is held
    assert editor.protect([]) is None and editor.protected is None
