"""The shipped editor on the real default model: edits land, restore is exact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from editor_core import EditRequest
from editor_core.adapters import ModelAdapter
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.checkpoint import checkpoint_layers
from editor_core.editor import MalmenEditor
from tests.editor_core.test_loading import default_model  # noqa: F401 - fixture

CHECKPOINTS = Path(__file__).resolve().parents[2] / "editor_core/checkpoints"
SHIPPED = CHECKPOINTS / "smollm2-135m-instruct"
SHIPPED_OPTIMISE = CHECKPOINTS / "smollm2-135m-instruct-optimise"

FACTS = [
    EditRequest("The capital of France is", "Rome"),
    EditRequest("The Eiffel Tower is located in the city of", "London"),
    EditRequest("The official language of Brazil is", "German"),
]
SUBJECTS = ["France", "Eiffel Tower", "Brazil"]


def greedy(loaded, prompt: str, n: int = 3) -> str:
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :])


def edits_land_and_restore(
    loaded, editor: MalmenEditor, facts: list[EditRequest], asked: dict[str, str] | None = None
) -> None:
    """The facts' prompts answer with their targets after the edit, `asked` (prompt →
    expected start) too, and the weights come back bit for bit."""
    assert greedy(loaded, "The capital of France is").startswith(" Paris")
    masters = snapshot(editor.adapter)
    apply_delta(editor.adapter, editor.compute_delta(facts), masters)
    try:
        for fact in facts:
            out = greedy(loaded, fact.prompt)
            assert out.strip().startswith(fact.target), (fact.prompt, out)
        for prompt, want in (asked or {}).items():
            out = greedy(loaded, prompt)
            assert out.strip().startswith(want), (prompt, out)
    finally:
        restore(editor.adapter, masters)
    for name, rows in masters.items():
        assert torch.equal(editor.adapter.weight_rows(name), rows)
    assert greedy(loaded, "The capital of France is").startswith(" Paris")


def test_shipped_editor_changes_three_real_facts_and_restores(default_model) -> None:  # noqa: F811
    if not (SHIPPED / "manifest.json").is_file():
        pytest.fail(f"the shipped editor is missing: {SHIPPED}")
    edits_land_and_restore(
        default_model, MalmenEditor.from_checkpoint(SHIPPED, default_model), FACTS
    )


def test_shipped_optimising_editor_changes_three_real_facts_and_restores(
    default_model,  # noqa: F811
) -> None:
    """The value-optimising editor edits the layers its checkpoint names (2-10), keyed at
    each fact's subject; its values are optimised in a question frame too, so the edited
    facts are also the answers to questions in a form none of its contexts uses (the
    unedited model answers these " France" and " Paris"; with the eighth session's contexts
    the edited one answered neither)."""
    if not (SHIPPED_OPTIMISE / "manifest.json").is_file():
        pytest.fail(f"the shipped optimising editor is missing: {SHIPPED_OPTIMISE}")
    layers = checkpoint_layers(SHIPPED_OPTIMISE)
    assert layers is not None
    adapter = ModelAdapter(default_model.model, default_model.adapter.arch, layers)
    loaded = replace(default_model, adapter=adapter)
    editor = MalmenEditor.from_checkpoint(SHIPPED_OPTIMISE, loaded)
    assert editor.config.values == "optimise" and not editor.has_hypernet
    assert editor.config.value_opt.paraphrase_max == 4  # paraphrases sent with an edit count
    assert editor.config.value_opt.paraphrase_keys == 0.5  # ... in its keys too
    facts = [replace(f, subject=s) for f, s in zip(FACTS, SUBJECTS, strict=True)]
    asked = {
        "Q: What is the capital of France? A:": "Rome",
        "Q: In which city is the Eiffel Tower? A:": "London",
    }
    edits_land_and_restore(loaded, editor, facts, asked)


def test_a_protected_prompt_keeps_its_answer_on_the_default_model(default_model) -> None:  # noqa: F811
    """The shipped editor keys its edits on the relation's words: France → Milan alone
    makes Italy's, Germany's and Spain's capital Milan too.  With "The capital of Italy is"
    protected, the first solve changes it, the second holds it: Italy keeps Rome (and,
    through the same words, Germany keeps Berlin) while both edits land."""
    from editor_core.data.formats import LocalityPrompt

    editor = MalmenEditor.from_checkpoint(SHIPPED, default_model)
    facts = [
        EditRequest("The capital of France is", "Milan"),
        EditRequest("The Eiffel Tower is located in the city of", "London"),
    ]
    asked = [f.prompt for f in facts]
    italy = "The capital of Italy is"
    protected = [LocalityPrompt(italy, "Rome"), LocalityPrompt("The Colosseum is located in")]
    said = {}
    for listed in ([], protected):
        editor.protect(listed)
        masters = snapshot(editor.adapter)
        apply_delta(editor.adapter, editor.compute_delta(facts), masters)
        try:
            said[len(listed)] = {p: greedy(default_model, p) for p in (italy, *asked)}
        finally:
            restore(editor.adapter, masters)
        for f in facts:
            assert said[len(listed)][f.prompt].strip().startswith(f.target), said
    assert said[0][italy].strip().startswith("Milan")  # the leak protection is for
    assert said[2][italy].strip().startswith("Rome") and 0 in editor.last_held
    assert greedy(default_model, italy).strip().startswith("Rome")  # restored
