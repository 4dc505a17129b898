from __future__ import annotations

import pytest
import torch

from editor_core.encoding import (
    IGNORE,
    EditRequest,
    EditTooLongError,
    encode_edits,
    target_prefix,
    tokenize_pair,
)
from tests.tiny import tiny_tokenizer


def test_prompt_and_target_are_tokenised_separately_with_a_leading_space() -> None:
    tok = tiny_tokenizer()
    p, t = tokenize_pair(tok, "The capital of France is", "Paris")
    assert p == tok("The capital of France is")["input_ids"]
    assert t == tok(" Paris", add_special_tokens=False)["input_ids"]
    assert tok.decode(t) == " Paris"
    # A prompt that already ends in whitespace gets no second space.
    _, t2 = tokenize_pair(tok, "The capital of France is ", "Paris")
    assert tok.decode(t2) == "Paris"


def test_no_merge_across_the_boundary_and_no_eos() -> None:
    tok = tiny_tokenizer()
    batch = encode_edits(tok, [EditRequest("The capital of", "France")])
    p, t = tokenize_pair(tok, "The capital of", "France")
    # Input is prompt + target minus the last target token (nothing predicts past it).
    assert batch.input_ids[0].tolist() == (p + t)[:-1]
    assert tok.eos_token_id not in batch.input_ids[0].tolist()


def test_labels_mark_exactly_the_positions_that_predict_target_tokens() -> None:
    tok = tiny_tokenizer()
    reqs = [
        EditRequest("The capital of France is", "Rome"),
        EditRequest("Paris", "the city of the eiffel tower"),
        EditRequest("A", "B"),
    ]
    batch = encode_edits(tok, reqs)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    for b, r in enumerate(reqs):
        p, t = tokenize_pair(tok, r.prompt, r.target)
        positions = torch.nonzero(batch.predict_mask[b]).flatten().tolist()
        # From the last prompt token to the second-to-last target token.
        assert positions == list(range(len(p) - 1, len(p) - 1 + len(t)))
        assert batch.labels[b, positions].tolist() == t
        assert batch.target_lengths[b] == len(t)
        # Right padding: ones then zeros, and padding never predicts anything.
        n = len(p) + len(t) - 1
        assert batch.attention_mask[b].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert (batch.labels[b, n:] == IGNORE).all()


def test_label_alignment_matches_the_causal_lm_loss() -> None:
    """Shifted labels give the same loss as HF's own (unshifted) causal-LM labels."""
    from tests.tiny import tiny_model

    tok = tiny_tokenizer()
    model = tiny_model("llama")
    r = EditRequest("The capital of France is", "Rome")
    batch = encode_edits(tok, [r])
    p, t = tokenize_pair(tok, r.prompt, r.target)
    full = torch.tensor([p + t])
    hf_labels = torch.full_like(full, IGNORE)
    hf_labels[0, len(p) :] = torch.tensor(t)
    expected = model(input_ids=full, labels=hf_labels).loss
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    ours = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE
    )
    torch.testing.assert_close(ours, expected)


def test_too_long_edits_are_refused_with_a_named_error() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(EditTooLongError, match="over the limit"):
        encode_edits(tok, [EditRequest("the capital " * 20, "Paris")], max_length=16)
    with pytest.raises(ValueError):
        encode_edits(tok, [])


def test_sentencepiece_style_tokenizer_gets_no_extra_space() -> None:
    class SP:  # marks word starts itself: "x" -> "▁x", " x" -> "▁", "▁x"
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return {"input_ids": [5, 7] if text.startswith(" ") else [7]}

        def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
            return [{5: "\u2581", 7: "\u2581x"}[i] for i in ids]

    assert target_prefix(SP(), "The capital is") == ""  # type: ignore[arg-type]
