"""Subject anchors: keep an edit off the other subjects of its relation template.

An edit is keyed on the positions that predict its target — for "The capital of France is"
the key is the hidden state at " is", which is dominated by the relation template.  The
least-squares shift therefore also moves "The capital of Germany is" (MALMEN.md §6: the
neighbourhood failure).  When the request names its subject, the editor substitutes k
fictional subjects for it ("The capital of Alwina Nilsson is", ...) and adds the keys of
those *anchor* prompts to the normal equation as rows whose value difference is zero:

    S* = argmin ‖K S − D‖² + ν ‖K_a S‖² + λ‖S‖² (+ tr(Sᵀ P S))

The solve is asked to leave the template direction where it is, so the shift must act on
what sets the edited subject apart.  Anchor rows are ordinary rows (keys scaled by √ν,
values 0): KᵀK and KᵀD stay sums over rows, so chunk invariance, joint mode and the
closed-form backward are unchanged.  Anchors are chosen by a hash of the request, never by
its batch-mates, so an edit's rows do not depend on what it is solved with.

The substitute names come from `data/anchor_subjects.txt`: fictional names, disjoint from
every evaluation subject, so no evaluated prompt is ever an anchor.

`AnchorNames` says how a substitute is made.  "other": a whole other name — its last token
is almost never the subject's.  "same_last_word": a fictional first word + the subject's
own last word ("Calderon College" → "Alwina College"), so the anchor's key is read at the
very token the edit is keyed on when the editor keys on the subject's last token; the
solve must then tell the subject apart by what came before that token (a generated 256-fact
draw leaves half of its neighbourhood prompts sharing their subject's last token with some
edited subject).  Subjects of one word fall back to "other".
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from editor_core.encoding import EditRequest, subject_span

ANCHOR_SUBJECTS_FILE = Path(__file__).parent / "data" / "anchor_subjects.txt"
AnchorNames = Literal["other", "same_last_word"]


@lru_cache(maxsize=1)
def anchor_subjects() -> tuple[str, ...]:
    lines = ANCHOR_SUBJECTS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(s.strip() for s in lines if s.strip() and not s.startswith("#"))


def anchor_prompts(
    prompt: str,
    subject: str | None,
    k: int,
    pool: Sequence[str] | None = None,
    kind: AnchorNames = "other",
) -> list[str]:
    """k prompts with the subject replaced by other names; [] without a subject in the prompt.

    Deterministic: the names are drawn with a seed made from (prompt, subject).
    """
    return [p for p, _name in anchor_pairs(prompt, subject, k, pool, kind)]


def substitutes(subject: str, pool: Sequence[str], kind: AnchorNames) -> list[str]:
    """The names that may stand in for `subject` (never the subject itself)."""
    if kind not in get_args(AnchorNames):
        raise ValueError(f"anchor names {kind!r}: expected one of {get_args(AnchorNames)}")
    own = subject.strip()
    words = own.split()
    if kind == "same_last_word" and len(words) > 1:
        firsts = dict.fromkeys(name.split()[0] for name in pool if name.split())
        names = [f"{first} {words[-1]}" for first in firsts]
    else:
        names = list(pool)
    return [s for s in names if s.casefold() != own.casefold()]


def anchor_pairs(
    prompt: str,
    subject: str | None,
    k: int,
    pool: Sequence[str] | None = None,
    kind: AnchorNames = "other",
) -> list[tuple[str, str]]:
    """(anchor prompt, the name put in place of the subject), k of them."""
    if k <= 0 or not subject:
        return []
    pattern = subject_span(prompt, subject)
    if pattern is None:
        return []
    names = substitutes(subject, pool or anchor_subjects(), kind)
    seed = int.from_bytes(hashlib.sha256(f"{prompt}\x00{subject}".encode()).digest()[:8], "big")
    chosen = random.Random(seed).sample(names, min(k, len(names)))
    return [(_put(pattern, prompt, name), name) for name in chosen]


def _put(pattern: re.Pattern[str], prompt: str, name: str) -> str:
    """Every match replaced by `name`, taken literally (a function replacement: a plain
    string would read backslashes in the name as group references)."""

    def literal(_m: re.Match[str]) -> str:
        return name

    return pattern.sub(literal, prompt)


def anchor_requests(
    requests: Sequence[EditRequest], k: int, kind: AnchorNames = "other"
) -> tuple[list[EditRequest], list[int]]:
    """(anchor requests, index of the edit each belongs to).

    An anchor continues its prompt with the edit's own target, so its keys sit at the same
    relative positions as the edit's rows (the last prompt token and the target tokens).
    """
    out: list[EditRequest] = []
    owners: list[int] = []
    for i, r in enumerate(requests):
        for p, name in anchor_pairs(r.prompt, r.subject, k, kind=kind):
            out.append(EditRequest(p, r.target, name))
            owners.append(i)
    return out, owners
