from __future__ import annotations

import pytest
import torch

from editor_core.baselines import FTConfig, FTEditor, MendEditor
from editor_core.hooks import shifted
from editor_core.metrics import token_accuracy
from tests.editor_core.test_editor import editor_for, facts, hook_count, model_state, tiny_loaded


def test_mend_sums_rank_one_shifts_and_differs_from_least_squares() -> None:
    loaded = tiny_loaded()
    editor = editor_for(loaded)
    reqs = facts(5)
    mend = MendEditor(editor).compute_delta(reqs)
    malmen = editor.compute_delta(reqs)
    name = loaded.adapter.names[0]
    cached = editor.cache(reqs)
    pu, pg, eta = editor.nets.pseudo(name, cached[name].keys, cached[name].grads)
    torch.testing.assert_close(mend.shifts[name], -eta.detach() * pu.detach().T @ pg.detach())
    assert (mend.shifts[name] - malmen.shifts[name]).norm() > 1e-3 * malmen.shifts[name].norm()


def test_fine_tuning_baseline_edits_through_the_same_interface_and_is_pure() -> None:
    loaded = tiny_loaded()
    reqs = facts(4)
    before, hooks = model_state(loaded.model), hook_count(loaded.model)
    delta = FTEditor(
        loaded.adapter, loaded.tokenizer, FTConfig(steps=30, lr=1e-1, max_norm=50.0)
    ).compute_delta(reqs)
    assert delta.rows == {}
    assert all(s.norm() <= 50.0 + 1e-3 for s in delta.shifts.values())
    after = model_state(loaded.model)
    assert all(torch.equal(after[n][0], w) for n, (w, _, _) in before.items())
    assert hook_count(loaded.model) == hooks
    base_acc = sum(token_accuracy(loaded.model, loaded.tokenizer, reqs))
    with shifted(loaded.adapter, delta.shifts):
        acc = sum(token_accuracy(loaded.model, loaded.tokenizer, reqs))
    assert acc > base_acc


def test_baselines_use_paraphrases_as_asked() -> None:
    """mend edits the editor's `paraphrase_rows` paraphrases as edits of their own; ft with
    `paraphrases` = k trains on them: both equal editing them explicitly."""
    from editor_core.encoding import EditRequest

    loaded = tiny_loaded()
    loaded.model.double()
    plain, other = facts(2), facts(4, seed=1)[2:]
    reqs = [
        EditRequest(r.prompt, r.target, paraphrases=(o.prompt,))
        for r, o in zip(plain, other, strict=True)
    ]
    spelled = plain + [EditRequest(o.prompt, r.target) for r, o in zip(plain, other, strict=True)]
    editor = editor_for(loaded)
    rows1 = editor_for(loaded, paraphrase_rows=1)
    for a, b in (
        (MendEditor(rows1).compute_delta(reqs), MendEditor(editor).compute_delta(spelled)),
        (
            FTEditor(
                loaded.adapter, loaded.tokenizer, FTConfig(steps=3, paraphrases=1)
            ).compute_delta(reqs),
            FTEditor(loaded.adapter, loaded.tokenizer, FTConfig(steps=3)).compute_delta(spelled),
        ),
    ):
        for name in loaded.adapter.names:
            torch.testing.assert_close(a.shifts[name], b.shifts[name])
    ignored = FTEditor(loaded.adapter, loaded.tokenizer, FTConfig(steps=3))  # paraphrases 0
    assert not torch.equal(
        ignored.compute_delta(reqs).shifts[loaded.adapter.names[0]],
        FTEditor(loaded.adapter, loaded.tokenizer, FTConfig(steps=3))
        .compute_delta(spelled)
        .shifts[loaded.adapter.names[0]],
    )


def test_baselines_report_progress_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    """`factpatch eval` asks every editor for its own bars: ft's Adam steps (with the target
    NLL) can take an hour at N = 256; a service call asks for none."""
    loaded = tiny_loaded()
    ft = FTEditor(loaded.adapter, loaded.tokenizer, FTConfig(steps=3))
    quiet = ft.compute_delta(facts(2))
    assert capsys.readouterr().err == ""
    loud = ft.compute_delta(facts(2), progress=True)
    err = capsys.readouterr().err
    assert "ft:" in err and "/3 [" in err and "nll=" in err  # steps, with the loss
    for name in loaded.adapter.names:
        torch.testing.assert_close(quiet.shifts[name], loud.shifts[name])
    MendEditor(editor_for(loaded)).compute_delta(facts(2), progress=True)
    assert "mend" in capsys.readouterr().err
