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


def test_joint_versions_respread_every_live_edit(tmp_path: Path) -> None:
    """A re-spreading editor (values="optimise"): each stored edit keeps its residual target
    and subject; every joint version is one spread over all live edits from the base
    weights — the same weights as editing them all at once — and withdrawing re-spreads the
    rest.  Edits stored without a target fall back to summing rows."""
    import torch

    from editor_core.apply import new_weights
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded)
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs = distinct_subject_facts(5, seed=7)
    edits = [
        {"edit_id": f"e{i}", "prompt": r.prompt, "target": r.target, "subject": r.subject or ""}
        for i, r in enumerate(reqs)
    ]

    first = backend.compute(edits[:3])
    for e in first:
        backend.rows.save(e)
    _, live, m1 = backend.joint([], first, set())
    second = backend.compute(edits[3:])
    for e in second:
        backend.rows.save(e)
    tensors, live, m2 = backend.joint(live, second, set())
    assert m1["respread"] and m2["respread"] and live == [e["edit_id"] for e in edits]

    stored = RowStore(tmp_path / "edits").load("e1")  # from disk, not the cache
    assert stored.subject == reqs[1].subject
    assert stored.residual_target is not None
    torch.testing.assert_close(stored.residual_target, first[1].residual_target)

    z = torch.stack([e.residual_target for e in first + second])  # type: ignore[misc]
    expected = new_weights(
        loaded.adapter, editor.solve(editor.joint_rows(reqs, z)), backend.base_masters
    )
    for n, t in expected.items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)

    # withdrawing an edit re-spreads the others
    tensors, live, m3 = backend.joint(live, [], {"e0"})
    assert m3["respread"] and live == ["e1", "e2", "e3", "e4"]
    expected = new_weights(
        loaded.adapter, editor.solve(editor.joint_rows(reqs[1:], z[1:])), backend.base_masters
    )
    for n, t in expected.items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)

    # an edit stored without a target (another editor configuration): stored rows summed
    first[0].residual_target = None
    _, _, m4 = backend.joint([], first, set())
    assert m4["respread"] is False
