"""The README's Python examples run as written, on the real default model."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from tests.editor_core.test_loading import DATA_DIR, _require_default_model

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_python_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_default_model()
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2  # the library example and the value-optimising editor
    monkeypatch.chdir(ROOT)  # the examples use paths relative to a checkout
    namespace: dict[str, object] = {}
    out = io.StringIO()
    for i, block in enumerate(blocks):
        # the suite's data directory (FACTPATCH_DATA_DIR), where the README says "data"
        code = block.replace('Path("data")', f"Path({os.fspath(DATA_DIR)!r})")
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    # the first example edits France → Rome and prints the greedy continuation
    assert "Rome" in out.getvalue()
    assert namespace["editor"].config.values == "optimise"  # type: ignore[attr-defined]
