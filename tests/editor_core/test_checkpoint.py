from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editor_core.checkpoint import CheckpointError, save_editor
from editor_core.editor import MalmenEditor
from tests.editor_core.test_editor import editor_for, facts, tiny_loaded


def trained_looking(loaded) -> MalmenEditor:
    editor = editor_for(loaded)
    with torch.no_grad():  # make the state non-trivial: blocks, η, λ, normaliser
        for p in editor.nets.parameters():
            p.add_(0.01 * torch.randn_like(p))
    editor.nets.train()
    cached = editor.cache(facts(4))
    for name, rows in cached.items():
        editor.nets.observe(name, rows.keys, rows.grads)
    editor.nets.eval()
    return editor


def test_round_trip_gives_the_same_delta(tmp_path: Path) -> None:
    loaded = tiny_loaded()
    editor = trained_looking(loaded)
    save_editor(tmp_path / "ck", editor, {"n_edits": 16, "data_sha256": "abc", "step": 7})
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["modules"] == {n: list(s) for n, s in loaded.adapter.shapes().items()}
    assert cfg["n_edits"] == 16 and cfg["step"] == 7 and cfg["hyper"]["rank"] == 8
    again = MalmenEditor.from_checkpoint(tmp_path / "ck", loaded)
    assert again.checkpoint_sha256 and len(again.checkpoint_sha256) == 64
    assert again.lambdas() == editor.lambdas()
    reqs = facts(5)
    a, b = editor.compute_delta(reqs), again.compute_delta(reqs)
    assert all(torch.equal(a.shifts[n], b.shifts[n]) for n in a.shifts)
    overridden = MalmenEditor.from_checkpoint(tmp_path / "ck", loaded, eta_scale=0.5)
    assert overridden.config.eta_scale == 0.5
    assert not list(tmp_path.glob("**/*.pt")) and not list(tmp_path.glob("**/*.bin"))


def test_corrupted_file_is_refused(tmp_path: Path) -> None:
    loaded = tiny_loaded()
    save_editor(tmp_path / "ck", editor_for(loaded), {})
    path = tmp_path / "ck" / "editor.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        MalmenEditor.from_checkpoint(tmp_path / "ck", loaded)


def test_checkpoint_for_another_model_is_refused(tmp_path: Path) -> None:
    save_editor(tmp_path / "ck", editor_for(tiny_loaded("llama")), {})
    with pytest.raises(CheckpointError, match="trained for modules"):
        MalmenEditor.from_checkpoint(tmp_path / "ck", tiny_loaded("gpt2"))


def test_checkpoint_layers_names_the_trained_layers(tmp_path: Path) -> None:
    from editor_core.checkpoint import checkpoint_layers

    loaded = tiny_loaded(layers=4, edit=(1, 3))
    save_editor(tmp_path / "ck", editor_for(loaded, key_position="subject", anchors=3), {})
    assert checkpoint_layers(tmp_path / "ck") == (1, 3)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["editor"]["key_position"] == "subject" and cfg["editor"]["anchors"] == 3
    assert checkpoint_layers(tmp_path / "missing") is None
    shipped = Path(__file__).resolve().parents[2] / "editor_core/checkpoints/smollm2-135m-instruct"
    assert checkpoint_layers(shipped) == tuple(range(24, 30))
