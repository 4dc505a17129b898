"""A fact's subject, found in its prompt when the client named none.

A subject-keyed editor (malmen-opt, `key_position="subject"`) reads an edit at its
subject's last token; without a subject it falls back to the prompt's last token, where the
relation's words dominate, and lands far less often (ES 0.48 against 0.98 on validation).
`infer_subject` recovers the subject from the text alone, so such an edit still keys on it:

- the candidates are the prompt's name-like spans: runs of words that begin with a capital
  letter or a digit, joined through the lowercase particles of names ("Statue of Liberty",
  "Domenico van den Broek"); a sentence's first word counts only when a name follows it
  ("The Eiffel Tower" → "Eiffel Tower", "What" alone is no name);
- paraphrases, when sent, vote: a fact's subject is the part of its wording every
  rephrasing keeps, so the candidate the most paraphrases contain wins ("Government
  business in Lorsilland" with "Lorsilland's official language is" → "Lorsilland"), and
  with no name-like span at all the longest stretch the prompt shares with every paraphrase
  stands in ("The telephone was invented by" / "The inventor of the telephone was" →
  "telephone").
- ties go to the longer span, then the later one (questions name their subject last).

The result is always a substring of the prompt (`encoding.subject_span` finds it), and None
when nothing qualifies.  What only matters for the key is the subject's last token; on the
generated validation facts and the hand-written real-world set that token is right for
nearly every fact (`scripts/subject_inference.py`; numbers in docs/results.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from editor_core.encoding import EditRequest

__all__ = ["MAX_WORDS", "infer_subject", "with_subjects"]

log = logging.getLogger(__name__)

MAX_WORDS = 12  # the longest stretch a paraphrase vote looks at (bounds the work on long prompts)

_WORD = re.compile(r"\S+")
_EDGE = ".,;:!?\"'()[]{}«»“”‘’"


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# lowercase words inside names: "Statue of Liberty", "Domenico van den Broek"
_PARTICLES = _wordset(
    "of de da del della der den di du en la le van von y bin al el the and & upon on"
)
# capitalised only because a sentence or a question starts with them
_OPENERS = _wordset(
    "the a an what which who whom whose where when why how is was are were does did do "
    "in on at of for from by to as this that these those it its there here q a question "
    "answer"
)
_FUNCTION = _OPENERS | _wordset("is was are were with or their his her be been")


@dataclass(frozen=True)
class _Span:
    start: int  # character offsets in the prompt
    end: int
    text: str


@dataclass(frozen=True)
class _Word:
    text: str  # without edge punctuation or a possessive 's
    start: int
    end: int
    closes: bool  # punctuation follows it: no name runs on past it
    possessive: bool  # "Torres-Elliott's": a name, even as a sentence's first word


def _words(text: str) -> list[_Word]:
    out = []
    for m in _WORD.finditer(text):
        raw = m.group()
        stripped = raw.lstrip(_EDGE)
        start = m.start() + len(raw) - len(stripped)
        word = stripped.rstrip(_EDGE)
        closes = len(word) < len(stripped)
        possessive = False
        for suffix in ("'s", "’s"):
            if word.endswith(suffix) and len(word) > len(suffix):
                word, possessive = word[: -len(suffix)], True
        if word:
            out.append(_Word(word, start, start + len(word), closes, possessive))
    return out


def _is_name_word(word: _Word) -> bool:
    return word.text[:1].isupper() or word.text[:1].isdigit()


def _name_runs(words: list[_Word]) -> list[list[_Word]]:
    """Maximal runs of capitalised words, through name particles, that no punctuation
    breaks, without a sentence's opener ("The", "What", "Q:")."""
    runs: list[list[_Word]] = []
    i = 0
    while i < len(words):
        if not _is_name_word(words[i]):
            i += 1
            continue
        j = i + 1
        while j < len(words) and not words[j - 1].closes:
            if _is_name_word(words[j]):
                j += 1
                continue
            k = j  # particles count only when a capitalised word follows them
            while k < len(words) and words[k].text.lower() in _PARTICLES and not words[k].closes:
                k += 1
            if k == j or k == len(words) or not _is_name_word(words[k]):
                break
            j = k + 1
        run = words[i:j]
        while run and run[0].text.lower() in _OPENERS:
            run = run[1:]  # "The Eiffel Tower" → "Eiffel Tower"; "Q: Who" → nothing
        if run:
            runs.append(run)
        i = j
    return runs


def _span(prompt: str, run: Sequence[_Word]) -> _Span:
    return _Span(run[0].start, run[-1].end, prompt[run[0].start : run[-1].end])


def _contains(text: str, part: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(part)}(?!\w)", text, re.IGNORECASE) is not None


def _shared_stretch(prompt: str, words: list[_Word], others: Sequence[str]) -> _Span | None:
    """The longest run of the prompt's words that every one of `others` contains, trimmed
    of function words at both ends."""
    best: _Span | None = None
    for i in range(len(words)):
        for j in range(min(len(words), i + MAX_WORDS), i, -1):
            run = words[i:j]
            if run[0].text.lower() in _FUNCTION or run[-1].text.lower() in _FUNCTION:
                continue
            span = _span(prompt, run)
            if all(_contains(o, span.text) for o in others):
                if best is None or len(span.text) > len(best.text):
                    best = span
                break
    return best


def _by_paraphrases(prompt: str, words: list[_Word], others: Sequence[str]) -> _Span | None:
    """The name-like stretch the most paraphrases contain (the longest of those, then the
    latest), or the longest stretch all of them share when none contains a name."""
    best: tuple[int, int, int] | None = None
    found: _Span | None = None
    for run in _name_runs(words):
        for a in range(len(run)):
            for b in range(a + 1, min(len(run), a + MAX_WORDS) + 1):
                if not (_is_name_word(run[a]) and _is_name_word(run[b - 1])):
                    continue
                span = _span(prompt, run[a:b])
                key = (sum(_contains(o, span.text) for o in others), len(span.text), span.start)
                if key[0] > 0 and (best is None or key > best):
                    best, found = key, span
    return found or _shared_stretch(prompt, words, others)


def infer_subject(prompt: str, paraphrases: Sequence[str] = ()) -> str | None:
    """The subject of the fact `prompt` states (a substring of it), or None.

    `paraphrases`: the fact in other words, when the client sent them; they vote for the
    stretch every wording keeps.
    """
    words = _words(prompt)
    others = [p for p in paraphrases if p.strip()]
    if others:
        span = _by_paraphrases(prompt, words, others)
        if span is not None:
            return span.text
    runs = _name_runs(words)
    if len(runs) > 1:
        # a lone capitalised first word ("Government business in …") starts a sentence
        runs = [r for r in runs if r[0] is not words[0] or len(r) > 1 or r[0].possessive] or runs
    spans = [_span(prompt, run) for run in runs]
    if not spans:
        return None
    return max(spans, key=lambda s: (len(s.text), s.start)).text


def with_subjects(requests: Sequence[EditRequest]) -> list[EditRequest]:
    """`requests`, each that names no subject given the one `infer_subject` finds in its
    prompt and paraphrases (still None where there is none: a warning says how many).  For
    subject-keyed editors (`EditorConfig.keys_on_subject`); the others read no subject."""
    out = []
    for r in requests:
        if not r.subject:
            r = replace(r, subject=infer_subject(r.prompt, r.paraphrases))
            log.info("an edit of %r names no subject; keyed on %r", r.prompt[:60], r.subject)
        out.append(r)
    bare = sum(r.subject is None for r in out)
    if bare:
        log.warning(
            "%d of %d edits name no subject and none was found in their prompts: a "
            "subject-keyed editor reads them at the prompt's last token, where they land far "
            "less often (docs/results.md); send `subject` with each edit",
            bare,
            len(out),
        )
    return out
