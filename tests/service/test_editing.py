"""Which editor the worker loads: the shipped checkpoint only for the model it was trained for."""

from __future__ import annotations

from dataclasses import replace
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


def _edit_dicts(reqs: list) -> list[dict]:
    return [
        {"edit_id": f"e{i}", "prompt": r.prompt, "target": r.target, "subject": r.subject or ""}
        for i, r in enumerate(reqs)
    ]


def _add_joint(backend, live: list[str], edits: list[dict]) -> tuple:
    """Compute and store `edits`, then the joint version over `live` + them:
    (tensors, live ids, metrics, the stored edits)."""
    new = backend.compute(edits)
    for e in new:
        backend.rows.save(e)
    return (*backend.joint(live, new, set()), new)


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
    edits = _edit_dicts(reqs)
    _, live, m1, first = _add_joint(backend, [], edits[:3])
    tensors, live, m2, second = _add_joint(backend, live, edits[3:])
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


def test_a_subject_edited_in_two_batches_gets_one_residual_change(tmp_path: Path) -> None:
    """Edits naming one subject share their δ (optimize.py): arriving in different batches,
    they are re-optimised as one group at the joint version (and stored so); withdrawing
    one re-optimises the other alone.  Each version equals editing its live edits at once."""
    import torch

    from editor_core import EditRequest
    from editor_core.apply import new_weights
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded, value_opt=replace(OPT, bf16=False))  # batch-independent
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    a, b = distinct_subject_facts(2, seed=8)
    s = a.subject or ""
    c = EditRequest(f"Everyone knows that {s} likes", "bread", s)  # a's subject again
    edits = [
        {"edit_id": eid, "prompt": r.prompt, "target": r.target, "subject": r.subject or ""}
        for eid, r in (("a", a), ("b", b), ("c", c))
    ]

    def version_at_once(reqs: list[EditRequest]) -> dict[str, torch.Tensor]:
        z = editor.residual_targets(reqs).z
        return new_weights(
            loaded.adapter, editor.solve(editor.joint_rows(reqs, z)), backend.base_masters
        )

    first = backend.compute(edits[:2])
    assert [e.target_group for e in first] == [("a",), ("b",)]
    for e in first:
        backend.rows.save(e)
    _, live, _ = backend.joint([], first, set())
    second = backend.compute(edits[2:])
    assert second[0].target_group == ("c",)  # alone in its batch
    backend.rows.save(second[0])
    tensors, live, m = backend.joint(live, second, set())
    assert live == ["a", "b", "c"] and m["targets_reoptimised"] == 2
    for n, t in version_at_once([a, b, c]).items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)
    on_disk = RowStore(tmp_path / "edits")
    assert on_disk.load("a").target_group == ("a", "c") == on_disk.load("c").target_group
    assert on_disk.load("b").target_group == ("b",)
    together = editor.residual_targets([a, c]).z
    torch.testing.assert_close(on_disk.load("a").residual_target, together[0])

    tensors, live, m = backend.joint(live, [], {"c"})  # a alone again
    assert live == ["a", "b"] and m["targets_reoptimised"] == 1
    assert backend.rows.load("a").target_group == ("a",)
    for n, t in version_at_once([a, b]).items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)


def test_values_that_miss_their_target_nll_are_logged(tmp_path: Path, caplog) -> None:
    """An edit whose value optimisation stops above stop_loss probably will not land: the
    worker's compute says so, through the shared `residual_targets` (with a budget of 0
    steps no value can reach it; with the test budget on these facts, all do)."""
    import logging
    from dataclasses import replace

    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = distinct_subject_facts(3, seed=7)
    edits = [
        {"edit_id": f"e{i}", "prompt": r.prompt, "target": r.target, "subject": r.subject or ""}
        for i, r in enumerate(reqs)
    ]
    starved = optimising(loaded, value_opt=replace(OPT, steps=0))
    with caplog.at_level(logging.WARNING, logger="editor_core.optimize"):
        EditBackend(loaded, starved, RowStore(tmp_path / "a")).compute(edits)
    assert "3 of 3 edits' values did not reach the target NLL" in caplog.text
    caplog.clear()
    roomy = optimising(loaded, value_opt=replace(OPT, stop_loss=1e9))
    with caplog.at_level(logging.WARNING, logger="editor_core.optimize"):
        EditBackend(loaded, roomy, RowStore(tmp_path / "b")).compute(edits)
    assert "did not reach the target NLL" not in caplog.text


def test_joint_version_records_the_prior_weight_it_solved_with(tmp_path: Path) -> None:
    """With `preserve_ref_edits`, μ grows with the live edits; the version metrics say which
    μ the solve used."""
    import torch

    from editor_core.preserve import low_rank_prior
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded, preserve=0.5, preserve_ref_edits=2)
    editor.key_prior = low_rank_prior(
        {m.name: torch.eye(m.d_in) for m in loaded.adapter.modules}, rank=4, tail=True
    )
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    edits = _edit_dicts(distinct_subject_facts(3, seed=7))
    _, live, m1, _ = _add_joint(backend, [], edits[:1])
    _, live, m2, _ = _add_joint(backend, live, edits[1:])
    assert (m1["preserve"], m2["preserve"]) == (0.5, 0.75)  # μ·max(1, N/2), N = 1 then 3


def test_joint_batch_targets_are_clamped_for_every_live_edit(tmp_path: Path) -> None:
    """With a clamp rule (`value_opt.max_norm_ref_edits`) a joint batch's residual targets
    are found for the solve they go into — every live edit, the worker's `n_live` — not
    for the batch alone."""
    import torch

    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    rule = replace(OPT, bf16=False, max_norm=1.0, max_norm_ref_edits=2, max_norm_min=0.05)
    editor = optimising(loaded, value_opt=rule)
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs = distinct_subject_facts(2, seed=5)
    alone = backend.compute(_edit_dicts(reqs))
    crowded = backend.compute(_edit_dicts(reqs), n_live=256)
    want = editor.residual_targets(reqs, n_edits=256).z
    for e, z in zip(crowded, want, strict=True):
        torch.testing.assert_close(e.residual_target, z)
    assert not torch.allclose(alone[0].residual_target, crowded[0].residual_target)


def test_a_joint_version_past_a_doubling_reoptimises_for_the_new_clamp(tmp_path: Path) -> None:
    """With a clamp rule, the targets stored when fewer edits were live were found with a
    larger clamp: the version that crosses a doubling re-optimises them, so it equals the
    simultaneous edit of its live facts; the clamp is stored with each edit."""
    import torch

    from editor_core.apply import new_weights
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    rule = replace(OPT, bf16=False, max_norm=1.0, max_norm_ref_edits=2, max_norm_min=0.05)
    editor = optimising(loaded, value_opt=rule)
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs = distinct_subject_facts(3, seed=9)
    edits = _edit_dicts(reqs)
    first = backend.compute(edits[:2], n_live=2)
    for e in first:
        backend.rows.save(e)
    _, live, m1 = backend.joint([], first, set())
    assert m1["targets_reoptimised"] == 0 and first[0].target_clamp == 1.0
    second = backend.compute(edits[2:], n_live=3)  # 3 live edits: one doubling past 2
    for e in second:
        backend.rows.save(e)
    tensors, live, m2 = backend.joint(live, second, set())
    assert m2["targets_reoptimised"] == 2 and live == ["e0", "e1", "e2"]
    stored = RowStore(tmp_path / "edits").load("e0")  # from disk
    assert stored.target_clamp == 0.75  # 1 − ¼
    z = editor.residual_targets(reqs).z  # the simultaneous edit of all three
    expected = new_weights(
        loaded.adapter, editor.solve(editor.joint_rows(reqs, z), 3), backend.base_masters
    )
    for n, t in expected.items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)


def test_keep_prompts_are_stored_with_the_edit_and_used_by_every_version(tmp_path: Path) -> None:
    """An edit's keep prompts (and paraphrases) travel with the job, are stored beside its rows, and shape
    its residual target (value_opt.keep_weight > 0) both when it is computed and when a
    later joint version re-optimises it (a subject edited again in another batch)."""
    import torch

    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    editor = optimising(loaded, value_opt=replace(OPT, bf16=False, keep_weight=10.0))
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs = distinct_subject_facts(2, seed=4)
    keep = [f"{reqs[0].subject} is", f"Of {reqs[0].subject}"]
    edits = _edit_dicts(reqs)
    edits[0]["keep"] = keep
    edits[0]["paraphrases"] = [f"So {reqs[0].subject}"]
    (held, other) = backend.compute(edits)
    (free,) = backend.compute([{**edits[0], "keep": []}])
    assert held.keep == tuple(keep) and other.keep == ()
    assert not torch.allclose(held.residual_target, free.residual_target)
    backend.rows.save(held)
    stored = RowStore(tmp_path / "edits").load(held.edit_id)  # from disk
    assert stored.keep == tuple(keep) and stored.paraphrases == (f"So {reqs[0].subject}",)
    assert stored.request().keep == tuple(keep)
    assert stored.request().paraphrases == stored.paraphrases
    want = editor.residual_targets([stored.request()]).z[0]
    torch.testing.assert_close(held.residual_target, want)


def test_paraphrase_rows_are_stored_with_their_edit(tmp_path: Path) -> None:
    """Hyper-network editor with `paraphrase_rows`: an edit's paraphrases give rows of their
    own, stored with the edit (so a joint version and a withdrawal carry them), and the
    joint version equals editing everything at once."""
    import torch

    from editor_core.apply import new_weights
    from editor_core.encoding import EditRequest
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import editor_for, facts, tiny_loaded

    loaded = tiny_loaded()
    editor = editor_for(loaded, paraphrase_rows=1)
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs, other = facts(3), facts(4, seed=5)[3:]
    edits = _edit_dicts(reqs)
    edits[0]["paraphrases"] = [other[0].prompt]
    tensors, live, _, _ = _add_joint(backend, [], edits)
    name = loaded.adapter.names[0]
    target_tokens = len(loaded.tokenizer(" " + reqs[0].target, add_special_tokens=False).input_ids)
    plain = editor_for(loaded).compute_rows(reqs[:1])[name].keys.shape[0]
    stored = RowStore(tmp_path / "edits").load("e0")
    assert stored.rows[name].keys.shape[0] == plain + target_tokens  # its paraphrase's rows
    sent = [
        EditRequest(r.prompt, r.target, paraphrases=tuple(e.get("paraphrases", ())))
        for r, e in zip(reqs, edits, strict=True)
    ]
    expected = new_weights(
        loaded.adapter, editor.solve(editor.compute_rows(sent)), backend.base_masters
    )
    for n, t in expected.items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-4, atol=1e-6)
    tensors, live, _ = backend.joint(live, [], {"e0"})  # withdrawn: its paraphrase rows too
    assert live == ["e1", "e2"]
    expected = new_weights(
        loaded.adapter, editor.solve(editor.compute_rows(sent[1:])), backend.base_masters
    )
    for n, t in expected.items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-4, atol=1e-6)


def test_a_joint_version_keys_each_edit_on_its_stored_paraphrases(tmp_path: Path) -> None:
    """`value_opt.paraphrase_keys`: the paraphrases stored with an edit join its key at every
    joint re-spread, so a version built from two batches is the simultaneous edit of all
    three facts with their paraphrases — not of the bare prompts."""
    import torch

    from editor_core.apply import new_weights
    from editor_core.encoding import EditRequest
    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import tiny_loaded
    from tests.editor_core.test_optimise import OPT, distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    vo = replace(OPT, bf16=False, paraphrase_max=2, paraphrase_keys=1.0)
    editor = optimising(loaded, value_opt=vo)
    backend = EditBackend(loaded, editor, RowStore(tmp_path / "edits"))
    reqs = [
        replace(r, paraphrases=(f"So {r.subject}", f"{r.subject} then"))
        for r in distinct_subject_facts(3, seed=6)
    ]
    edits = [
        {**e, "paraphrases": list(r.paraphrases)}
        for e, r in zip(_edit_dicts(reqs), reqs, strict=True)
    ]
    _, live, _, _ = _add_joint(backend, [], edits[:2])
    tensors, live, _, _ = _add_joint(backend, live, edits[2:])
    assert live == ["e0", "e1", "e2"]
    z = editor.residual_targets(reqs).z

    def weights(requests: list[EditRequest]) -> dict[str, torch.Tensor]:
        rows = editor.joint_rows(requests, z)
        return new_weights(loaded.adapter, editor.solve(rows, 3), backend.base_masters)

    for n, t in weights(reqs).items():
        torch.testing.assert_close(tensors[n], t, rtol=1e-3, atol=1e-5)
    bare = weights([replace(r, paraphrases=()) for r in reqs])  # the same targets, no keys
    assert any(not torch.allclose(tensors[n], t, rtol=1e-3, atol=1e-5) for n, t in bare.items())


def test_an_edit_without_a_subject_is_keyed_on_the_one_its_prompt_names(tmp_path: Path) -> None:
    """A subject-keyed editor finds the subject of an edit that names none
    (`editor_core.subjects.infer_subject`): its stored edit and rows are those of the same
    edit sent with that subject.  The hyper-network editor, keyed where the prompt predicts
    its target, keeps what was sent."""
    import torch

    from service.editing import EditBackend, RowStore
    from tests.editor_core.test_editor import editor_for, tiny_loaded
    from tests.editor_core.test_optimise import distinct_subject_facts, optimising

    loaded = tiny_loaded(layers=3, edit=(0, 1))
    reqs = [
        replace(r, prompt=r.prompt.replace(r.subject or "", name), subject=name)
        for r, name in zip(
            distinct_subject_facts(2, seed=3), ("Velistland", "Orriovia Bank"), strict=True
        )
    ]
    sent = _edit_dicts(reqs)
    bare = [{**e, "subject": ""} for e in sent]
    backend = EditBackend(loaded, optimising(loaded), RowStore(tmp_path / "opt"))
    found, named = backend.compute(bare), backend.compute(sent)
    assert [e.subject for e in found] == [r.subject for r in reqs]
    for a, b in zip(found, named, strict=True):
        assert a.residual_target is not None and b.residual_target is not None
        torch.testing.assert_close(a.residual_target, b.residual_target)
        for name, rows in a.rows.items():
            torch.testing.assert_close(rows.keys, b.rows[name].keys)
    hyper = EditBackend(loaded, editor_for(loaded), RowStore(tmp_path / "hyper"))
    assert [e.subject for e in hyper.compute(bare)] == [None, None]
