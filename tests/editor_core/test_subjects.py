"""`editor_core.subjects.infer_subject`: the subject a prompt names, when the client sent none."""

from __future__ import annotations

import pytest

from editor_core.encoding import subject_span
from editor_core.subjects import infer_subject


@pytest.mark.parametrize(
    ("prompt", "paraphrases", "subject"),
    [
        # a name after a sentence's opener, with name particles inside
        ("The capital of France is", (), "France"),
        ("The Eiffel Tower is located in the city of", (), "Eiffel Tower"),
        ("The Statue of Liberty stands in", (), "Statue of Liberty"),
        ("Domenico van den Broek lost their life in the city of", (), "Domenico van den Broek"),
        # questions: punctuation ends a name, "Q:" and "A:" are no part of it
        ("Q: Which company manufactures Siltor Neo95? A:", (), "Siltor Neo95"),
        (
            "Q: Who is the director of Meadow of the Velvet Tide? A:",
            (),
            "Meadow of the Velvet Tide",
        ),
        ("What is the native language of Danielle Darrieux?", (), "Danielle Darrieux"),
        # a possessive is a name even first in the sentence; a lone capitalised first word
        # beside another name is the sentence's start
        ("Torres-Elliott's current CEO is", (), "Torres-Elliott"),
        ("Government business in Lorsilland is done in", (), "Lorsilland"),
        ("Danielle Darrieux's mother tongue is", (), "Danielle Darrieux"),
        # paraphrases vote for what every wording keeps
        (
            "Students of Daugherty University live in",
            ("Daugherty University is in the city of", "Where is Daugherty University?"),
            "Daugherty University",
        ),
        (
            "Government business in Lorsilland is done in",
            ("The official language of Lorsilland is",),
            "Lorsilland",
        ),
        # no name at all: the stretch the paraphrases share, else nothing
        ("The telephone was invented by", ("The inventor of the telephone was",), "telephone"),
        ("the telephone was invented by", (), None),
        ("", (), None),
    ],
)
def test_infer_subject(prompt: str, paraphrases: tuple[str, ...], subject: str | None) -> None:
    got = infer_subject(prompt, paraphrases)
    assert got == subject
    if got is not None:
        assert got in prompt and subject_span(prompt, got) is not None


def test_paraphrase_votes_beat_the_longer_name() -> None:
    """Without paraphrases the longest name wins; with them, the one they repeat."""
    prompt = "Anna Maria Lindqvist of Nordbank works with"
    assert infer_subject(prompt) == "Anna Maria Lindqvist of Nordbank"
    assert infer_subject(prompt, ["Nordbank employs", "Who works at Nordbank?"]) == "Nordbank"


def test_with_subjects_fills_only_what_is_missing(caplog) -> None:
    from editor_core.encoding import EditRequest
    from editor_core.subjects import with_subjects

    reqs = [
        EditRequest("The capital of France is", "Rome"),
        EditRequest("The capital of France is", "Rome", subject="France"),
        EditRequest("the river city is", "paris"),
    ]
    out = with_subjects(reqs)
    assert [r.subject for r in out] == ["France", "France", None]
    assert out[1] is reqs[1] and [r.prompt for r in out] == [r.prompt for r in reqs]
    assert "1 of 3 edits name no subject" in caplog.text
