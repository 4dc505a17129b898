"""The synthetic generator: relations, phrasings, disjoint splits, type-correct targets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from editor_core.data.formats import read_facts, read_locality
from editor_core.data.generator import GeneratorConfig, SplitData, generate, write_splits
from editor_core.data.pools import VALUE_POOLS
from editor_core.data.relations import HELD_OUT, RELATIONS, RELATIONS_BY_NAME

CONFIG = GeneratorConfig(n_train=600, n_val=80, n_test=120, seed=3)


@pytest.fixture(scope="module")
def data() -> dict[str, SplitData]:
    return generate(CONFIG)


def _phrasing_of(prompt: str, subject: str) -> str:
    """The template a prompt was made from (compared case-insensitively)."""
    return prompt.lower().replace(subject.lower(), "{s}")


def _templates(relation: str, group: str) -> set[str]:
    rel = RELATIONS_BY_NAME[relation]
    ts = rel.train_phrasings if group == "train" else rel.heldout_phrasings
    return {t.lower() for t in ts}


def test_relations_and_phrasings() -> None:
    assert len(RELATIONS) >= 30
    assert len({r.name for r in RELATIONS}) == len(RELATIONS)
    for rel in RELATIONS:
        assert len(set(rel.phrasings)) >= 8, rel.name
        assert all(p.count("{s}") == 1 for p in rel.phrasings)
        for group in (rel.train_phrasings, rel.heldout_phrasings):
            assert any(p.startswith("Q:") and p.endswith("A:") for p in group), rel.name
        assert len(rel.heldout_phrasings) == HELD_OUT


def test_sizes(data: dict[str, SplitData]) -> None:
    assert [len(data[s].facts) for s in ("train", "val", "test")] == [600, 80, 120]
    for split in data.values():
        assert split.locality and split.neighborhood


def test_splits_disjoint_by_entity(data: dict[str, SplitData]) -> None:
    train_text = " ".join(
        [f.prompt for f in data["train"].facts]
        + [p for f in data["train"].facts for p in f.paraphrases]
        + [p.prompt for p in data["train"].neighborhood + data["train"].locality]
    )
    for split in ("val", "test"):
        subjects = {f.subject for f in data[split].facts}
        assert subjects.isdisjoint({f.subject for f in data["train"].facts})
        assert not [s for s in subjects if s in train_text]
    assert {f.subject for f in data["val"].facts}.isdisjoint(
        {f.subject for f in data["test"].facts}
    )


def test_splits_disjoint_by_phrasing(data: dict[str, SplitData]) -> None:
    for split in ("train", "test"):
        group = "train" if split == "train" else "heldout"
        for f in data[split].facts:
            allowed = _templates(f.relation, group)
            for prompt in (f.prompt, *f.paraphrases):
                assert _phrasing_of(prompt, f.subject) in allowed, (split, prompt)
    for rel in RELATIONS:
        assert not set(rel.train_phrasings) & set(rel.heldout_phrasings)


def test_edit_paraphrases_are_unused_training_phrasings(data: dict[str, SplitData]) -> None:
    """`edit_paraphrases` (what a client sends with an edit) are training phrasings of the
    fact's relation it does not use itself; --edit-paraphrases K writes more of them and
    changes nothing else (its own random stream)."""
    more = generate(replace(CONFIG, n_edit_paraphrases=5))
    for name, split in data.items():
        for f, g in zip(split.facts, more[name].facts, strict=True):
            for facts, n in ((f, 2), (g, 5)):
                used = {_phrasing_of(p, f.subject) for p in (f.prompt, *f.paraphrases)}
                free = _templates(f.relation, "train") - used
                sent = [_phrasing_of(p, f.subject) for p in facts.edit_paraphrases]
                assert len(set(sent)) == len(sent) == min(n, len(free)), (name, sent)
                assert set(sent) <= free, (name, f.relation, sent)
            assert replace(g, edit_paraphrases=f.edit_paraphrases) == f


def test_targets_type_correct_and_counterfactual(data: dict[str, SplitData]) -> None:
    for f in data["train"].facts + data["test"].facts:
        assert f.target != f.true_answer
        rel = RELATIONS_BY_NAME[f.relation]
        if rel.value_type in VALUE_POOLS:
            assert f.target in VALUE_POOLS[rel.value_type]
            assert f.true_answer in VALUE_POOLS[rel.value_type]
        assert len(f.paraphrases) == 2 and f.prompt not in f.paraphrases


def test_neighbourhood_same_phrasing_other_subject(data: dict[str, SplitData]) -> None:
    subjects = {f.subject for f in data["test"].facts}
    for f in data["test"].facts:
        (nb,) = f.neighborhood
        assert f.subject not in nb.prompt
        assert not any(s in nb.prompt for s in subjects)  # neighbours are never edited
        template = _phrasing_of(f.prompt, f.subject)
        head, _, tail = template.partition("{s}")
        assert nb.prompt.lower().startswith(head) and nb.prompt.lower().endswith(tail)
        assert nb.answer


def test_keep_prompts_ask_the_subjects_other_relations_in_training_words(
    data: dict[str, SplitData],
) -> None:
    """Each fact's keep prompts: one per other relation its subject has, in a TRAINING
    phrasing in every split (held-out phrasings stay unseen by anything an edit is given).
    (A few phrasings are shared by relations of different subject types, "The home city
    of {s} is": a prompt counts for every relation it may stand for.)"""
    types = {r.name: r.subject_type for r in RELATIONS}
    for split in data.values():
        for f in split.facts:
            assert len(set(f.keep)) == len(f.keep)
            got: set[str] = set()
            for k in f.keep:
                assert f.subject in k
                t = _phrasing_of(k, f.subject)
                rel = {r.name for r in RELATIONS if t in {p.lower() for p in r.train_phrasings}}
                assert rel and f.relation not in rel, (k, f.relation)
                got |= rel
            same = {r for r, st in types.items() if st == types[f.relation]} - {f.relation}
            assert same <= got  # every other relation of the same subject type
            about = {g.relation for g in split.facts if g.subject == f.subject}
            assert about <= got | {f.relation}  # the split's other facts about the subject


def test_deterministic(tmp_path: Path) -> None:
    small = GeneratorConfig(n_train=120, n_val=20, n_test=20, seed=11)
    a = write_splits(generate(small), tmp_path / "a", small)
    b = write_splits(generate(small), tmp_path / "b", small)
    for name in ("train.jsonl", "test.jsonl", "locality_train.jsonl", "neighborhood_test.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    other = GeneratorConfig(n_train=120, n_val=20, n_test=20, seed=12)
    c = write_splits(generate(other), tmp_path / "c", other)
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    assert len(read_facts(a / "train.jsonl")) == 120
    assert read_locality(a / "neighborhood_val.jsonl")
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["counts"]["test"]["facts"] == 20


def test_realworld_subjects_kept_out_of_ordinary_pool(data: dict[str, SplitData]) -> None:
    prompts = {p.prompt for s in data.values() for p in s.locality}
    assert "The capital of Germany is" not in prompts  # a real-world neighbour
    assert "The capital of France is" not in prompts  # a real-world edit


def test_cli_generate(tmp_path: Path) -> None:
    import argparse

    from service.commands import data as data_cmd

    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["data", "generate", "--out", str(tmp_path), "--train", "80", "--val", "10", "--test", "10"]
    )
    assert args.func(args) == 0
    assert len(read_facts(tmp_path / "train.jsonl")) == 80
