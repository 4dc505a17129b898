from __future__ import annotations

import torch

from editor_core.joint import EditLedger, normalise_prompt, split_rows
from tests.editor_core.test_editor import editor_for, facts, tiny_loaded


def ledger_with(editor, reqs, prefix: str) -> EditLedger:
    ledger = EditLedger()
    rows = split_rows(editor.compute_rows(reqs), len(reqs))
    for i, (r, per) in enumerate(zip(reqs, rows, strict=True)):
        ledger.add(f"{prefix}{i}", r.prompt, per)
    return ledger


def close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert (a[n] - b[n]).norm() / a[n].norm() < 1e-5, n


def test_union_equals_incremental_and_remove_is_exact() -> None:
    loaded = tiny_loaded()
    editor = editor_for(loaded)
    A, B = facts(6, seed=1), facts(5, seed=2)
    lams = editor.lambdas()
    only_a = editor.solve(editor.compute_rows(A))
    union = editor.solve(editor.compute_rows(A + B))  # one batch, one solve
    ledger = ledger_with(editor, A, "a")
    close(ledger.solve(lams), only_a)
    rows_b = split_rows(editor.compute_rows(B), len(B))
    for i, (r, per) in enumerate(zip(B, rows_b, strict=True)):
        assert ledger.add(f"b{i}", r.prompt, per) is None
    close(ledger.solve(lams), union)
    for i in range(len(B)):
        ledger.remove(f"b{i}")
    close(ledger.solve(lams), only_a)
    assert ledger.ids() == [f"a{i}" for i in range(len(A))]


def test_supersede_by_normalised_prompt() -> None:
    assert normalise_prompt("  The Capital of   FRANCE is. ") == "the capital of france is"
    loaded = tiny_loaded()
    editor = editor_for(loaded)
    req = facts(1)[0]
    ledger = EditLedger()
    ledger.add("old", req.prompt, split_rows(editor.compute_rows([req]), 1)[0])
    shouty = req.prompt.upper() + " ?"
    new_rows = split_rows(editor.compute_rows([req.__class__(shouty, "rome")]), 1)[0]
    assert ledger.add("new", shouty, new_rows) == "old"
    assert ledger.ids() == ["new"]
    torch.testing.assert_close(
        ledger.rows_for("new")[editor.adapter.names[0]].keys, new_rows[editor.adapter.names[0]].keys
    )


def test_round_trip_through_tensors() -> None:
    loaded = tiny_loaded()
    editor = editor_for(loaded)
    ledger = ledger_with(editor, facts(4), "e")
    tensors, meta = ledger.to_tensors()
    import json

    again = EditLedger.from_tensors(tensors, json.loads(json.dumps(meta)))
    assert again.ids() == ledger.ids()
    lams = editor.lambdas()
    a, b = ledger.solve(lams), again.solve(lams)
    assert all(torch.equal(a[n], b[n]) for n in a)
