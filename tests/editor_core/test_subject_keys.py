"""key_position="subject": one row per fact at the subject's last token (ROME/MEMIT's
position), gradients of the target loss taken there, "predict" rows as the fallback."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from editor_core import EditRequest
from editor_core.encoding import encode_edits, subject_token_index, subject_token_indices
from editor_core.joint import EditLedger, split_rows
from tests.editor_core.test_anchors import subject_facts
from tests.editor_core.test_editor import editor_for, full_autograd, tiny_loaded
from tests.editor_core.test_trainer import make_trainer


def test_subject_token_index_is_the_last_subject_token() -> None:
    tok = tiny_loaded().tokenizer
    prompt = "The capital of France is"
    i = subject_token_index(tok, prompt, "France")
    ids = tok(prompt)["input_ids"]
    assert i is not None
    assert tok.decode(ids[: i + 1]).endswith("France")
    assert not tok.decode(ids[:i]).endswith("France")
    assert subject_token_index(tok, prompt, "france") == i  # any case
    assert subject_token_index(tok, prompt, "Germany") is None
    assert subject_token_index(tok, prompt, None) is None
    assert subject_token_index(tok, prompt, " ") is None
    # a multi-token subject: its LAST token; the last occurrence when it repeats
    j = subject_token_index(tok, "The Eiffel Tower is in", "Eiffel Tower")
    assert j is not None and tok.decode(
        tok("The Eiffel Tower is in")["input_ids"][: j + 1]
    ).endswith("Tower")
    twice = "France is big and France is"
    assert subject_token_index(tok, twice, "France") == subject_token_index(
        tok, twice[:-3], "France"
    )


def test_subject_token_index_counts_the_subject_tokens_like_a_list_index() -> None:
    tok = tiny_loaded().tokenizer
    prompt = "The Eiffel Tower is in"
    ids = tok(prompt)["input_ids"]
    hits = subject_token_indices(tok, prompt, "Eiffel Tower")
    assert len(hits) >= 2 and hits == list(range(hits[0], hits[-1] + 1))
    assert tok.decode(ids[hits[0] : hits[-1] + 1]).strip() == "Eiffel Tower"
    assert subject_token_index(tok, prompt, "Eiffel Tower") == hits[-1]
    assert subject_token_index(tok, prompt, "Eiffel Tower", -2) == hits[-2]
    assert subject_token_index(tok, prompt, "Eiffel Tower", 0) == hits[0]
    # a shorter subject clamps to its first (or last) token
    assert subject_token_index(tok, prompt, "Eiffel Tower", -99) == hits[0]
    assert subject_token_index(tok, prompt, "Eiffel Tower", 99) == hits[-1]
    assert subject_token_indices(tok, prompt, "Louvre") == []
    # the key mask follows: one row, at the chosen token
    reqs = [EditRequest(prompt, "Rome", "Eiffel Tower")]
    for which in (-1, -2):
        b = encode_edits(tok, reqs, key_position="subject", subject_token=which)
        assert b.key_mask is not None
        assert b.key_mask[0].nonzero().flatten().tolist() == [hits[which]]


def test_key_mask_marks_the_subject_and_falls_back_to_predicting_positions() -> None:
    tok = tiny_loaded().tokenizer
    reqs = [
        EditRequest("The capital of France is", "london bridge", "France"),
        EditRequest("The capital of France is", "london bridge"),  # no subject: predict rows
        EditRequest("The capital of France is", "london", "Spain"),  # not in prompt: predict
    ]
    b = encode_edits(tok, reqs, key_position="subject")
    assert b.key_mask is not None
    assert b.key_mask[0].sum() == 1
    assert int(b.key_mask[0].nonzero()) == subject_token_index(tok, reqs[0].prompt, "France")
    assert torch.equal(b.key_mask[1], b.predict_mask[1])
    assert torch.equal(b.key_mask[2], b.predict_mask[2])
    assert torch.equal(encode_edits(tok, reqs).keyed_mask, encode_edits(tok, reqs).predict_mask)
    with pytest.raises(ValueError, match="key_position"):
        encode_edits(tok, reqs, key_position="middle")  # type: ignore[arg-type]


def test_subject_rows_and_gradients_match_full_autograd() -> None:
    """Keys are the module inputs at the subject token; value-gradients are ∂(Σ target CE)/∂v
    there, with backward stopped at the lowest edited module — equal to a full autograd."""
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = subject_facts(4, seed=7)
    editor = editor_for(loaded, key_position="subject")
    cached = editor.cache(reqs)
    batch = encode_edits(loaded.tokenizer, reqs, key_position="subject")
    km = batch.keyed_mask
    assert km.sum() == len(reqs)  # one row per fact
    ins, grads = full_autograd(loaded, batch)
    assert list(grads) == loaded.adapter.names
    for n, g in grads.items():
        torch.testing.assert_close(cached[n].keys, ins[n][km], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cached[n].grads, g[km], rtol=1e-5, atol=1e-7)
        assert cached[n].grads.abs().sum() > 0  # later tokens do read the subject position
        assert cached[n].owner.tolist() == list(range(len(reqs)))


def test_subject_edits_keep_joint_mode_and_purity() -> None:
    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = editor_for(loaded, key_position="subject", anchors=2)
    reqs = subject_facts(5, seed=2)
    together = editor.solve(editor.compute_rows(reqs))
    ledger = EditLedger()
    for i, r in enumerate(reqs):
        ledger.add(f"e{i}", r.prompt, split_rows(editor.compute_rows([r]), 1)[0])
    alone = ledger.solve(editor.lambdas())
    for n in together:
        assert together[n].abs().max() > 0
        assert (alone[n] - together[n]).norm() / together[n].norm() < 1e-4, n


def test_training_in_subject_mode_updates_the_network() -> None:
    trainer = make_trainer(None, steps=2)
    trainer.editor.config = replace(trainer.editor.config, key_position="subject")
    trainer.train_set = [
        replace(ex, edit=replace(ex.edit, subject=ex.edit.prompt.split(" of ")[1][:-3]))
        for ex in trainer.train_set
    ]
    before = [p.detach().clone() for p in trainer.editor.nets.parameters()]
    stats = trainer.meta_step(trainer.sample(0))
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after = list(trainer.editor.nets.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
