"""`factpatch edit`'s facts file: prompt, target and the optional subject, paraphrases, keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.commands.edit import read_requests


def test_facts_file_carries_paraphrases_and_keep(tmp_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    lines = [
        {
            "prompt": "The capital of France is",
            "target": "Rome",
            "paraphrases": ["France's capital is"],
        },
        {
            "prompt": "The currency of Germany is the",
            "target": "pound",
            "subject": "Germany",
            "keep": ["The capital of Germany is"],
        },
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b = read_requests(path)
    assert (a.subject, a.paraphrases, a.keep) == (None, ("France's capital is",), ())
    assert (b.subject, b.paraphrases, b.keep) == ("Germany", (), ("The capital of Germany is",))
    path.write_text(json.dumps({"prompt": "p", "target": "t", "paraphrases": "one"}) + "\n")
    with pytest.raises(ValueError, match=r"facts.jsonl:1: 'paraphrases' must be a list"):
        read_requests(path)


def test_edit_command_writes_an_edited_model_that_keeps_protected_answers(
    tmp_path: Path,
) -> None:
    """`factpatch edit --protect` end to end on the default model with the served editor:
    the written model says Milan for France and still Rome for Italy (protected), and the
    log says the solve had to hold Italy — without it the edit moves Italy too
    (tests/editor_core/test_shipped_editor.py)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.editor_core.test_loading import DATA_DIR, _require_default_model
    from tests.editor_core.test_shipped_editor import SHIPPED, greedy

    _require_default_model()
    facts, protect, out = tmp_path / "facts.jsonl", tmp_path / "protect.jsonl", tmp_path / "m"
    facts.write_text(json.dumps({"prompt": "The capital of France is", "target": "Milan"}) + "\n")
    protect.write_text(json.dumps({"prompt": "The capital of Italy is"}) + "\n")
    root = Path(__file__).resolve().parents[2]
    args = {
        "--editor": SHIPPED,
        "--facts": facts,
        "--protect": protect,
        "--out": out,
        "--device": "cpu",
        "--data-dir": DATA_DIR.resolve(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "edit", *(str(x) for kv in args.items() for x in kv)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 protected prompts; the solve held 1 of them" in done.stderr
    loaded = SimpleNamespace(
        model=AutoModelForCausalLM.from_pretrained(out),
        tokenizer=AutoTokenizer.from_pretrained(out),
    )
    assert greedy(loaded, "The capital of France is").strip().startswith("Milan")
    assert greedy(loaded, "The capital of Italy is").strip().startswith("Rome")
