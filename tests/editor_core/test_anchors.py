from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from editor_core import EditRequest
from editor_core.anchors import (
    ANCHOR_SUBJECTS_FILE,
    anchor_prompts,
    anchor_requests,
    anchor_subjects,
    substitutes,
)
from editor_core.joint import EditLedger, split_rows
from tests.editor_core.test_editor import editor_for, tiny_loaded
from tests.editor_core.test_trainer import make_trainer
from tests.tiny import CORPUS_WORDS as W


def subject_facts(n: int, seed: int = 0) -> list[EditRequest]:
    """ "The R of S is T" with S named as the subject; targets of 1 to 3 words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        w = torch.randint(0, len(W), (6,), generator=g).tolist()
        target = " ".join(W[j] for j in w[3 : 3 + 1 + i % 3])
        out.append(EditRequest(f"The {W[w[0]]} {W[w[1]]} of {W[w[2]]} is", target, W[w[2]]))
    return out


def test_anchor_prompts_replace_the_subject_deterministically() -> None:
    prompt = "Where is Jean Dupont's office? Jean Dupont works in"
    a = anchor_prompts(prompt, "Jean Dupont", 5)
    assert a == anchor_prompts(prompt, "Jean Dupont", 5)  # a hash, not a random draw
    assert len(set(a)) == 5
    for p in a:
        assert "Jean Dupont" not in p
        assert p.endswith(" works in") and p.startswith("Where is ")
        name = p[len("Where is ") : p.index("'s office")]
        assert name in anchor_subjects()
        assert p.count(name) == 2  # every occurrence replaced
    # any case; nothing without a subject, or a subject missing from the prompt
    assert len(anchor_prompts("the capital of FRANCE is", "France", 3)) == 3
    assert anchor_prompts(prompt, None, 5) == []
    assert anchor_prompts(prompt, "  ", 5) == []
    assert anchor_prompts(prompt, "Marie Curie", 5) == []
    assert anchor_prompts(prompt, "Jean Dupont", 0) == []
    # the subject itself is never its own anchor, even when it is in the pool
    own = anchor_subjects()[0]
    assert all(own not in p for p in anchor_prompts(f"{own} lives in", own, 50))


def test_same_last_word_anchors_end_in_the_subjects_own_last_word() -> None:
    prompt = "Calderon College is located in"
    a = anchor_prompts(prompt, "Calderon College", 6, kind="same_last_word")
    assert a == anchor_prompts(prompt, "Calderon College", 6, kind="same_last_word")
    assert len(set(a)) == 6
    firsts = {name.split()[0] for name in anchor_subjects()}
    for p in a:
        name = p.removesuffix(" is located in")
        first, last = name.split(" ")
        assert last == "College" and first in firsts and first != "Calderon"
    # the subject's own first word never makes the subject itself
    pool = ["Calderon Group", "Alwina Nilsson"]
    assert substitutes("Calderon College", pool, "same_last_word") == ["Alwina College"]
    # one word: nothing to keep, so whole other names (as "other")
    assert substitutes("France", pool, "same_last_word") == substitutes("France", pool, "other")
    with pytest.raises(ValueError, match="anchor names 'nearby'"):
        substitutes("Calderon College", pool, "nearby")  # type: ignore[arg-type]
    reqs = [EditRequest(prompt, "Paris", "Calderon College"), EditRequest("x is", "y", None)]
    anchored, owners = anchor_requests(reqs, 2, "same_last_word")
    assert owners == [0, 0]
    assert all(r.subject.endswith(" College") and r.prompt.startswith(r.subject) for r in anchored)


def test_anchor_names_never_occur_in_the_shipped_evaluation_sets() -> None:
    names = anchor_subjects()
    assert len(names) >= 200 and len(set(names)) == len(names)
    data = ANCHOR_SUBJECTS_FILE.parent
    text = (data / "realworld.jsonl").read_text() + (data / "realworld_locality.jsonl").read_text()
    subjects = {json.loads(line).get("subject") for line in text.splitlines() if line.strip()}
    assert not subjects & set(names)
    assert not [n for n in names if n in text]


def test_anchor_rows_are_zero_value_rows_owned_by_their_edit() -> None:
    loaded = tiny_loaded()
    reqs = subject_facts(5)
    reqs[2] = replace(reqs[2], subject=None)  # no subject: no anchors for this one
    plain = editor_for(loaded).compute_rows(reqs)
    anchored = editor_for(loaded, anchors=3, anchor_weight=4.0).compute_rows(reqs)
    for name, p in plain.items():
        a = anchored[name]
        n = p.keys.shape[0]
        # the edit rows come first, unchanged
        torch.testing.assert_close(a.keys[:n], p.keys)
        torch.testing.assert_close(a.values[:n], p.values)
        extra_owner = a.owner[n:]
        assert (a.values[n:] == 0).all()
        for i, r in enumerate(reqs):
            rows_i = int((p.owner == i).sum())  # rows per prompt = target tokens
            want = 0 if r.subject is None else 3 * rows_i
            assert int((extra_owner == i).sum()) == want
        # keys scaled by √ν = 2: the anchor rows of a request, recomputed with ν = 1
    one = editor_for(loaded, anchors=3, anchor_weight=1.0).anchor_rows(reqs)
    four = editor_for(loaded, anchors=3, anchor_weight=4.0).anchor_rows(reqs)
    for name in one:
        torch.testing.assert_close(four[name].keys, 2 * one[name].keys)


def test_anchored_solve_is_the_weighted_least_squares_and_holds_anchors_still() -> None:
    """S = (KᵀK + ν K_aᵀK_a + λI)⁻¹ KᵀD (float64 reference), and the anchor keys move less
    as ν grows."""
    loaded = tiny_loaded()
    reqs = subject_facts(4, seed=3)
    base = editor_for(loaded)
    rows = base.compute_rows(reqs)
    anchors = editor_for(loaded, anchors=8, anchor_weight=1.0).anchor_rows(reqs)
    lams = base.lambdas()
    moved: dict[str, list[float]] = {n: [] for n in rows}
    for nu in (0.0, 1.0, 100.0):
        ed = editor_for(loaded, anchors=8, anchor_weight=nu) if nu else base
        shifts = ed.solve(ed.compute_rows(reqs))
        for n, r in rows.items():
            K, D, Ka = r.keys.double(), r.values.double(), anchors[n].keys.double()
            A = K.T @ K + nu * Ka.T @ Ka + lams[n] * torch.eye(K.shape[1], dtype=torch.float64)
            ref = torch.linalg.solve(A, K.T @ D)
            assert (shifts[n].double() - ref).norm() / ref.norm() < 1e-3, (n, nu)
            moved[n].append(float((Ka @ ref).norm()))
    for n, m in moved.items():
        assert m[0] > m[1] > m[2] and m[2] < 0.5 * m[0], (n, m)


def test_joint_mode_with_anchors_equals_one_batch() -> None:
    loaded = tiny_loaded()
    editor = editor_for(loaded, anchors=4, anchor_weight=2.0)
    reqs = subject_facts(7, seed=5)
    together = editor.solve(editor.compute_rows(reqs))
    ledger = EditLedger()
    for i, (r, per) in enumerate(zip(reqs, split_rows(editor.compute_rows(reqs), 7), strict=True)):
        ledger.add(f"e{i}", r.prompt, per)
    # one at a time: anchors depend on the request alone, never on its batch-mates
    alone = EditLedger()
    for i, r in enumerate(reqs):
        alone.add(f"e{i}", r.prompt, split_rows(editor.compute_rows([r]), 1)[0])
    lams = editor.lambdas()
    for solved in (ledger.solve(lams), alone.solve(lams)):
        for n in together:
            assert (solved[n] - together[n]).norm() / together[n].norm() < 1e-4, n


@pytest.mark.parametrize("anchors", [0, 2])
def test_training_with_anchors_in_the_solve(anchors: int) -> None:
    trainer = make_trainer(None, steps=3)
    trainer.editor.config = replace(trainer.editor.config, anchors=anchors)
    subjects = [
        replace(ex, edit=replace(ex.edit, subject=ex.edit.prompt.split(" of ")[1][:-3]))
        for ex in trainer.train_set
    ]
    trainer.train_set = subjects
    batch = trainer.sample(0)
    before = [p.detach().clone() for p in trainer.editor.nets.parameters()]
    stats = trainer.meta_step(batch)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after = list(trainer.editor.nets.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_anchor_names_never_occur_in_the_generated_data() -> None:
    """The evaluation data of `factpatch data generate` (seed 0) holds no anchor name."""
    import os
    from pathlib import Path

    facts = Path(os.environ.get("FACTPATCH_DATA_DIR", "data")) / "facts"
    files = sorted(facts.glob("*.jsonl"))
    if not files:
        pytest.skip(f"no generated data in {facts} (factpatch data generate --out {facts})")
    text = "".join(f.read_text() for f in files)
    assert not [n for n in anchor_subjects() if n in text]
