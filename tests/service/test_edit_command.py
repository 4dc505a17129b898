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
