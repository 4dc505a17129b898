"""Which editor the worker loads: the shipped checkpoint only for the model it was trained for."""

from __future__ import annotations

from pathlib import Path

import pytest

from editor_core import ModelSpec, load_model
from editor_core.checkpoint import CheckpointError, save_editor
from editor_core.editor import MalmenEditor
from service import editing


def _checkpoint(tiny_dir: Path, out: Path, layers: tuple[int, ...]) -> Path:
    loaded = load_model(ModelSpec(source=str(tiny_dir), layers=layers))
    return save_editor(out, MalmenEditor.random_init(loaded, seed=1), {"model": "tiny"})


def test_shipped_editor_only_for_its_own_model(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    loaded = load_model(ModelSpec(source=str(tiny_dir), layers=(0, 1)))
    other = _checkpoint(tiny_dir, tmp_path / "other", layers=(0,))
    same = _checkpoint(tiny_dir, tmp_path / "same", layers=(0, 1))

    # The shipped checkpoint was trained for other modules: a random-init editor, not an error.
    monkeypatch.setattr(editing, "SHIPPED_EDITOR", other)
    assert editing.load_editor(loaded, None, {}).checkpoint_sha256 is None
    # Asked for explicitly, a checkpoint for other modules is refused.
    with pytest.raises(CheckpointError, match="trained for modules"):
        editing.load_editor(loaded, str(other), {})
    with pytest.raises(FileNotFoundError):
        editing.load_editor(loaded, str(tmp_path / "missing"), {})
    # A shipped checkpoint that fits is used.
    monkeypatch.setattr(editing, "SHIPPED_EDITOR", same)
    assert editing.load_editor(loaded, None, {}).checkpoint_sha256 is not None
    # No shipped checkpoint at all: random init.
    monkeypatch.setattr(editing, "SHIPPED_EDITOR", tmp_path / "none")
    assert editing.load_editor(loaded, None, {}).checkpoint_sha256 is None
