"""Native JSONL format, public-benchmark loaders and the shipped real-world sets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from editor_core.data import (
    Fact,
    FactFormatError,
    LocalityPrompt,
    load_counterfact,
    load_zsre,
    read_facts,
    read_locality,
    realworld_facts,
    realworld_locality,
    write_facts,
    write_locality,
)
from editor_core.data.formats import is_question, neighbour_subject
from editor_core.encoding import normalise_prompt

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_facts_round_trip(tmp_path: Path) -> None:
    facts = [
        Fact(
            id="a",
            prompt="The Eiffel Tower is located in the city of",
            target="Rome",
            paraphrases=("The city that is home to the Eiffel Tower is",),
            subject="Eiffel Tower",
            relation="location",
            true_answer="Paris",
            locality=(LocalityPrompt("The capital of Peru is", "Lima"),),
            neighborhood=(LocalityPrompt("Big Ben is located in the city of", "London"),),
            keep=("The Eiffel Tower was designed by",),
        ),
        Fact(id="b", prompt="Q: Who wrote Hamlet? A:", target="Charles Dickens"),
    ]
    write_facts(tmp_path / "f.jsonl", facts)
    assert read_facts(tmp_path / "f.jsonl") == facts
    pool = [LocalityPrompt("Bees make", "honey"), LocalityPrompt("She opened the door and saw")]
    write_locality(tmp_path / "l.jsonl", pool)
    assert read_locality(tmp_path / "l.jsonl") == pool


def test_unknown_fields_ignored_and_ids_default(tmp_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    path.write_text(
        '{"prompt": "P is", "target": "x", "extra": 1}\n\n{"prompt": "Q is", "target": "y"}\n'
    )
    facts = read_facts(path)
    assert [f.id for f in facts] == ["facts-1", "facts-3"]
    assert facts[0].paraphrases == ()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "P is"}', "missing required field 'target'"),
        ('{"prompt": "P is", "target": " x"}', "whitespace"),
        ('{"prompt": "P is", "target": 3}', "must be a string"),
        ('{"prompt": "P is", "target": "x", "paraphrases": "no"}', "must be a list"),
        ('{"prompt": "P is", "target": "x", "keep": ["P was", ""]}', "keep[1] must be a non-empty"),
        ('{"prompt": "P is", "target": "x", "neighborhood": [{"answer": "a"}]}', "'prompt'"),
        ("[1, 2]", "JSON object"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok is", "target": "fine"}\n' + line + "\n")
    with pytest.raises(FactFormatError) as err:
        read_facts(path)
    assert f"{path}:2" in str(err.value)
    assert problem in str(err.value)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "1", "prompt": "a", "target": "b"}\n{"id": "1", "prompt": "c", "target": "d"}\n'
    )
    with pytest.raises(FactFormatError, match="duplicate id"):
        read_facts(path)


def test_zsre_fixture() -> None:
    facts = load_zsre(FIXTURES / "zsre_small.json")
    assert len(facts) == 4
    first = facts[0]
    assert first.prompt == "What university did Watts Humphrey attend?"
    assert first.target == "University of Michigan"  # `alt` is the edit
    assert first.true_answer == "Illinois Institute of Technology"
    assert first.paraphrases == ("What university did Watts Humphrey take part in?",)
    assert first.locality[0].prompt.startswith("nq question: ")
    assert first.locality[0].answer == "Hugo Weaving"
    assert facts[3].target == "Sleater-Kinney"  # no `alt`: falls back to answers[0]


def test_counterfact_fixture() -> None:
    facts = load_counterfact(FIXTURES / "counterfact_small.json")
    assert len(facts) == 3
    f = facts[0]
    assert f.id == "cf-0"
    assert f.prompt == "The mother tongue of Danielle Darrieux is"
    assert f.target == "English" and f.true_answer == "French"
    assert len(f.paraphrases) == 2
    # Neighbourhood prompts keep their true answer: the subject's target_true.
    assert [n.answer for n in f.neighborhood] == ["French"] * 3
    assert f.neighborhood[0].prompt == "The mother tongue of Léon Blum is"


def test_counterfact_bad_record_named(tmp_path: Path) -> None:
    path = tmp_path / "cf.json"
    path.write_text(
        json.dumps(
            [
                {
                    "case_id": 0,
                    "requested_rewrite": {
                        "prompt": "no slot",
                        "subject": "S",
                        "target_new": {"str": "a"},
                        "target_true": {"str": "b"},
                    },
                }
            ]
        )
    )
    with pytest.raises(FactFormatError, match=r"cf.json:record 0.*'\{\}'"):
        load_counterfact(path)


def test_realworld_set_is_valid() -> None:
    facts = realworld_facts()
    assert len(facts) >= 100
    for f in facts:
        assert len(f.paraphrases) == 2 and f.subject and f.relation
        assert f.true_answer and f.target != f.true_answer
        assert len(f.neighborhood) == 1
        nb = f.neighborhood[0]
        assert nb.answer and nb.answer != f.target
        assert f.subject not in nb.prompt  # another subject, same relation
        # one statement and one question paraphrase each (GS is reported per form)
        assert [is_question(p) for p in f.paraphrases] == [False, True], f.paraphrases
        assert not is_question(f.prompt)
    assert len({f.prompt for f in facts}) == len(facts)


def test_neighbour_subject_is_what_stands_in_the_subjects_place() -> None:
    f = Fact("x", "In 2010 Ada Lovelace moved to", "Rome", subject="Ada Lovelace")
    assert neighbour_subject(f, "In 2010 Alan Turing moved to") == "Alan Turing"
    assert neighbour_subject(f, "Alan Turing moved to") is None  # another template
    assert neighbour_subject(replace(f, subject=""), "In 2010 Alan Turing moved to") is None
    assert neighbour_subject(replace(f, subject="Grace"), "In 2010 Alan Turing moved to") is None
    # the real-world neighbours are written in their fact's template
    facts = realworld_facts()
    named = [neighbour_subject(f, p.prompt) for f in facts for p in f.neighborhood]
    assert sum(n is not None for n in named) >= 0.8 * len(named)  # 106 of 127
    assert all(n is None or n not in f.subject for n, f in zip(named, facts, strict=False))


def test_realworld_neighbours_are_not_edited_in_the_same_relation() -> None:
    from editor_core.data import REALWORLD_FACTS

    rows = [json.loads(line) for line in REALWORLD_FACTS.read_text().splitlines() if line.strip()]
    edited = {(r["subject"], r["relation"]) for r in rows}
    for r in rows:
        assert (r["neighborhood"][0]["subject"], r["relation"]) not in edited


def test_realworld_locality_is_valid() -> None:
    pool = realworld_locality()
    assert len(pool) >= 100
    assert all(p.answer for p in pool)
    edit_prompts = {f.prompt for f in realworld_facts()}
    assert not edit_prompts & {p.prompt for p in pool}


def _realworld_evaluated() -> set[str]:
    """Every prompt the real-world evaluation scores, normalised (`normalise_prompt`)."""
    return {
        normalise_prompt(p)
        for f in realworld_facts()
        for p in (f.prompt, *f.paraphrases, *(nb.prompt for nb in f.neighborhood))
    } | {normalise_prompt(p.prompt) for p in realworld_locality()}


def test_realworld_keep_prompts_name_the_subject_and_are_never_evaluated() -> None:
    facts, evaluated = realworld_facts(), _realworld_evaluated()
    for f in facts:
        assert len(f.keep) >= 2, f.id
        assert all(f.subject in k for k in f.keep), (f.id, f.keep)
        keep = [normalise_prompt(k) for k in f.keep]
        assert not set(keep) & evaluated, (f.id, f.keep)
        assert len(set(keep)) == len(keep), (f.id, f.keep)


def test_realworld_edit_paraphrases_name_the_subject_and_are_never_evaluated() -> None:
    facts, evaluated = realworld_facts(), _realworld_evaluated()
    keep = {normalise_prompt(k) for f in facts for k in f.keep}
    for f in facts:
        assert len(f.edit_paraphrases) == 2, f.id
        assert all(f.subject in p for p in f.edit_paraphrases), (f.id, f.edit_paraphrases)
        sent = [normalise_prompt(p) for p in f.edit_paraphrases]
        assert not set(sent) & evaluated, (f.id, f.edit_paraphrases)
        assert not set(sent) & keep, (f.id, f.edit_paraphrases)
        assert len(set(sent)) == len(sent), (f.id, f.edit_paraphrases)
