"""Scoring from the states entering the lowest edited block (editor_core/resume.py): exact
wherever it is used, refused where an architecture cannot be resumed, dropped once a
parameter below the block is written."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from editor_core.apply import apply_delta, restore, snapshot
from editor_core.data.formats import LocalityPrompt
from editor_core.evaluate import _logits_at, changed_prompts, prepare_locality
from editor_core.protect import protected_set
from tests.editor_core.test_editor import tiny_loaded
from tests.tiny import CORPUS_WORDS as W
from tests.tiny import TINY_TYPES

PROMPTS = [
    LocalityPrompt(f"The {W[3]} {W[5]} of {W[7]} is", W[9]),
    LocalityPrompt(f"The {W[2]} {W[6]} of {W[8]} is"),
    LocalityPrompt(f"A {W[11]} of {W[12]} {W[4]} was"),
    LocalityPrompt(f"{W[1]} is"),
]
# GPT-2 adds position embeddings to `inputs_embeds`: its blocks' input cannot be fed back
RESUMABLE = {t: t != "gpt2" for t in TINY_TYPES}


def _all_logits(model, loc) -> list[torch.Tensor]:
    return list(_logits_at(model, loc, 0, batch_size=3))


def _shift(loaded, scale: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        m.name: scale * torch.randn(m.d_in, m.d_out, generator=g) for m in loaded.adapter.modules
    }


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_resumed_scoring_equals_a_full_pass_or_is_refused(model_type: str) -> None:
    loaded = tiny_loaded(model_type, layers=4, edit=(2, 3))
    model, tok = loaded.model, loaded.tokenizer
    record = protected_set(model, tok, PROMPTS, batch_size=3, adapter=loaded.adapter).record
    if not RESUMABLE[model_type]:
        assert record.resume is None  # the check in scored_pass caught it: full passes
        return
    assert record.resume is not None and record.resume.layer == 2
    plain = replace(record, resume=None)
    for a, b in zip(_all_logits(model, record), _all_logits(model, plain), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, _shift(loaded, 5.0), masters)  # the edited blocks only
    try:
        assert record.resume.usable(model)
        edited = _all_logits(model, record)
        for a, b in zip(edited, _all_logits(model, plain), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert changed_prompts(model, tok, record) == changed_prompts(model, tok, plain)
        assert changed_prompts(model, tok, plain)  # the shift does change some answers
    finally:
        restore(loaded.adapter, masters)


def test_a_written_lower_parameter_turns_resuming_off() -> None:
    loaded = tiny_loaded("llama", layers=4, edit=(2, 3))
    model, tok = loaded.model, loaded.tokenizer
    record = protected_set(model, tok, PROMPTS, batch_size=3, adapter=loaded.adapter).record
    assert record.resume is not None and record.resume.usable(model)
    subset = record.subset([2, 0])
    assert subset.resume is not None and len(subset.resume.hidden) == 2
    lower = model.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        lower.mul_(3.0)  # another editor's layer, written in place
    assert not record.resume.usable(model)
    got = _all_logits(model, record)  # scored by full passes: the new lower weights count
    for a, b in zip(got, _all_logits(model, replace(record, resume=None)), strict=True):
        torch.testing.assert_close(a, b)
    assert changed_prompts(model, tok, record)  # and they do change the answers


def test_nothing_to_skip_when_the_first_block_is_edited() -> None:
    loaded = tiny_loaded("llama", layers=2, edit=(0, 1))
    record = prepare_locality(loaded.model, loaded.tokenizer, PROMPTS, adapter=loaded.adapter)
    assert record.resume is None and len(record.base) == len(PROMPTS)


def test_a_grown_list_reads_only_its_new_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """`protected_set(reuse=…)` (the worker's re-read after the list changed): prompts read
    before are taken over, states and all; the record equals one read from scratch."""
    import editor_core.evaluate as evaluate

    loaded = tiny_loaded("llama", layers=4, edit=(2, 3))
    model, tok = loaded.model, loaded.tokenizer
    before = protected_set(model, tok, PROMPTS[:3], batch_size=3, adapter=loaded.adapter)
    grown = [PROMPTS[1], PROMPTS[3], LocalityPrompt(PROMPTS[0].prompt, W[10]), PROMPTS[2]]
    read: list[int] = []
    real = evaluate.prepare_locality

    def counted(model, tokenizer, prompts, *a, **k):
        read.append(len(prompts))
        return real(model, tokenizer, prompts, *a, **k)

    monkeypatch.setattr(evaluate, "prepare_locality", counted)
    again = protected_set(model, tok, grown, 3, loaded.adapter, reuse=before)
    assert read == [2]  # the new prompt and the re-answered one
    scratch = protected_set(model, tok, grown, 3, loaded.adapter)
    assert again.texts == scratch.texts and again.sha256 == scratch.sha256
    a, b = again.record, scratch.record
    assert (a.sequences, a.start, a.gold) == (b.sequences, b.start, b.gold)
    for x, y in zip(a.base + a.margin, b.base + b.margin, strict=True):
        torch.testing.assert_close(x, y)
    assert a.resume is not None and b.resume is not None
    for x, y in zip(a.resume.hidden, b.resume.hidden, strict=True):
        torch.testing.assert_close(x, y)
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, _shift(loaded, 5.0), masters)
    try:
        assert changed_prompts(model, tok, a) == changed_prompts(model, tok, b)
    finally:
        restore(loaded.adapter, masters)
    # weights written since: nothing of the old set is taken over
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2.0)
    read.clear()
    protected_set(model, tok, grown, 3, loaded.adapter, reuse=again)
    assert read == [4]
