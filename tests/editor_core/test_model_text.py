"""The model's own prose as a prior corpus (editor_core/data/model_text.py)."""

from __future__ import annotations

from pathlib import Path

from editor_core.data.formats import read_locality, write_locality
from editor_core.data.model_text import REQUESTS, requests, sample_text


def test_requests_are_varied_and_reproducible() -> None:
    a, b = requests(200, seed=3), requests(200, seed=3)
    assert a == b
    assert requests(200, seed=4) != a
    assert len(set(a)) > 150  # topics vary, not just the 8 request styles
    styles = {r for r in REQUESTS if any(x.startswith(r.split("{")[0]) for x in a)}
    assert len(styles) == len(REQUESTS)


def test_sample_text_writes_locality_prompts(tiny_dir: Path, tmp_path: Path) -> None:
    from editor_core.config import ModelSpec
    from editor_core.loading import load_model

    loaded = load_model(ModelSpec(source=str(tiny_dir), layers=(0,)))
    side = loaded.tokenizer.padding_side
    texts = sample_text(
        loaded.model, loaded.tokenizer, 5, max_new_tokens=24, batch_size=2, seed=1, min_words=1
    )
    again = sample_text(
        loaded.model, loaded.tokenizer, 5, max_new_tokens=24, batch_size=2, seed=1, min_words=1
    )
    assert loaded.tokenizer.padding_side == side  # restored after left-padded generation
    assert 1 <= len(texts) <= 5
    assert texts == again  # seeded sampling
    assert all(t.answer is None and t.prompt == " ".join(t.prompt.split()) for t in texts)
    path = tmp_path / "text.jsonl"
    write_locality(path, texts)
    assert read_locality(path) == texts
