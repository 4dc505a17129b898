"""The shipped editor on the real default model: edits land, restore is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editor_core import EditRequest
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.editor import MalmenEditor
from tests.editor_core.test_loading import default_model  # noqa: F401 - fixture

SHIPPED = Path(__file__).resolve().parents[2] / "editor_core/checkpoints/smollm2-135m-instruct"

FACTS = [
    EditRequest("The capital of France is", "Rome"),
    EditRequest("The Eiffel Tower is located in the city of", "London"),
    EditRequest("The official language of Brazil is", "German"),
]


def greedy(loaded, prompt: str, n: int = 3) -> str:
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_shipped_editor_changes_three_real_facts_and_restores(default_model) -> None:  # noqa: F811
    if not (SHIPPED / "manifest.json").is_file():
        pytest.fail(f"the shipped editor is missing: {SHIPPED}")
    loaded = default_model
    assert greedy(loaded, "The capital of France is").startswith(" Paris")
    editor = MalmenEditor.from_checkpoint(SHIPPED, loaded)
    masters = snapshot(loaded.adapter)
    apply_delta(loaded.adapter, editor.compute_delta(FACTS), masters)
    try:
        for fact in FACTS:
            out = greedy(loaded, fact.prompt)
            assert out.strip().startswith(fact.target), (fact.prompt, out)
    finally:
        restore(loaded.adapter, masters)
    for name, rows in masters.items():
        assert torch.equal(loaded.adapter.weight_rows(name), rows)
    assert greedy(loaded, "The capital of France is").startswith(" Paris")
