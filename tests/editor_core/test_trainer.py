from __future__ import annotations

from pathlib import Path

import torch

from editor_core import EditRequest
from editor_core.editor import EditorConfig, MalmenEditor
from editor_core.hypernet import HyperConfig
from editor_core.loading import LoadedModel
from editor_core.trainer import MalmenTrainer, TrainConfig, TrainExample
from tests.editor_core.test_editor import tiny_loaded
from tests.tiny import CORPUS_WORDS as W


def examples(n: int, seed: int) -> list[TrainExample]:
    """Synthetic facts "The R of S is T", paraphrased "What R of S is", locality with
    the same relation and another subject (the hard case for locality)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s, r, t, other, ans = torch.randint(0, len(W), (5,), generator=g).tolist()
        out.append(
            TrainExample(
                EditRequest(f"The {W[r]} of {W[s]} is", W[t]),
                EditRequest(f"What {W[r]} of {W[s]} is", W[t]),
                f"The {W[r]} of {W[other]} is",
                W[ans],
            )
        )
    return out


def make_trainer(tmp: Path | None, steps: int, lr: float = 1e-2, **kw) -> MalmenTrainer:
    loaded: LoadedModel = tiny_loaded(layers=4, edit=(2, 3))
    hyper = HyperConfig(rank=16, eta_init=1e-3, lr=lr)
    editor = MalmenEditor.random_init(loaded, EditorConfig(hyper=hyper), seed=0)
    cfg = TrainConfig(
        n_edits=16,
        steps=steps,
        lr=lr,
        lambda_lr=1e-2,
        val_every=kw.pop("val_every", 50),
        val_n=32,
        ckpt_every=kw.pop("ckpt_every", 50),
        seed=0,
        out_dir=tmp,
        progress=False,
        **kw,
    )
    return MalmenTrainer(loaded, editor, examples(400, 0), examples(32, 1), cfg)


def test_meta_loss_falls_over_a_few_steps() -> None:
    trainer = make_trainer(None, steps=30)
    history = trainer.train()["history"]
    first = sum(h["loss"] for h in history[:5]) / 5
    last = sum(h["loss"] for h in history[-5:]) / 5
    assert last < first - 0.05
    assert all(torch.isfinite(p).all() for p in trainer.editor.nets.parameters())
    for net in trainer.editor.nets.nets.values():
        assert net.norm_count > 0  # normaliser saw training rows
        assert all(b.B.norm() > 0 for b in net.blocks)


def test_meta_training_makes_edits_land() -> None:
    trainer = make_trainer(None, steps=200)
    untrained = trainer.validate(trainer.val_set)
    trainer.train()
    trained = trainer.validate(trainer.val_set)
    assert trained["ES"] > untrained["ES"] + 0.1
    assert trained["GS"] > untrained["GS"] + 0.1


def test_best_last_checkpoints_and_resume_continues(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full", steps=6, val_every=3, ckpt_every=3)
    full_hist = full.train()["history"]
    assert (tmp_path / "full" / "best" / "manifest.json").is_file()
    assert (tmp_path / "full" / "last" / "optimizer.safetensors").is_file()
    assert (tmp_path / "full" / "training.png").stat().st_size > 1000  # the curves
    # interrupted after 3 steps, then resumed to 6: same parameters as uninterrupted
    part = make_trainer(tmp_path / "part", steps=3, val_every=3, ckpt_every=3)
    part.train()
    resumed = make_trainer(tmp_path / "part", steps=6, val_every=3, ckpt_every=3, resume=True)
    hist = resumed.train()["history"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full.editor.nets.parameters(), resumed.editor.nets.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert abs(hist[-1]["loss"] - full_hist[-1]["loss"]) < 1e-4
