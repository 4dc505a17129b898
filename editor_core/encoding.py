"""Tokenisation of edit pairs (MALMEN.md §2).

Prompt and target are tokenised *separately* and concatenated, so no BPE merge crosses the
boundary.  BPE tokenizers whose words carry their leading space (GPT-2, Llama-3, SmolLM2)
get a space before the target unless the prompt already ends in whitespace.  No EOS after
the target.  Sequences are right-padded.

Labels are stored *already shifted*: `labels[b, t]` is the token that the logits at
position t must predict, or -100.  So the positions that predict target tokens are exactly
`labels != -100` — the last prompt token up to the second-to-last target token — and the
same mask serves the loss and the key/gradient caching hooks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

IGNORE = -100

# Where an edit is keyed (MALMEN.md §2 uses "predict"):
#   "predict": every position whose logits predict a target token (one row per target token)
#   "subject": the last token of the subject in the prompt (one row per fact, ROME/MEMIT's
#              position); a request without a subject found in its prompt falls back to
#              "predict".  scripts/key_geometry.py measures why: subject-token keys separate
#              a fact's paraphrases from its neighbours far better than prompt-final keys.
KeyPosition = Literal["predict", "subject"]
# Positions to read keys at: an edit's (KeyPosition), or "template" — every prompt token
# except the subject's, where a subject-keyed edit must not act (EditorConfig.pin_weight).
KeyMask = Literal["predict", "subject", "template"]


_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s\.,;:!\?…]+$")


def normalise_prompt(prompt: str) -> str:
    """casefold, collapse whitespace, strip trailing punctuation and space: two prompts
    that read the same ask the same question."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    return _TRAILING.sub("", _SPACE.sub(" ", text).strip())


class EditTooLongError(ValueError):
    """A prompt + target pair exceeds the allowed number of tokens."""


class EmptyEditError(ValueError):
    """A prompt or target is empty after tokenisation."""


@dataclass(frozen=True)
class EditRequest:
    """One fact correction: the model should continue `prompt` with `target`."""

    prompt: str
    target: str
    # The entity the fact is about, as written in the prompt.  Optional; with it the editor
    # can anchor the edit to the subject (editor_core/anchors.py).
    subject: str | None = None
    # Prompts about the same subject whose next token the edit must leave alone ("The
    # capital of Germany is" when Germany's currency is edited).  Used by value optimisation
    # with `ValueOptConfig.keep_weight` > 0 (optimize.py); each must contain the subject.
    keep: tuple[str, ...] = ()
    # Other wordings of the same fact (the subject in each), which the edit should answer
    # too.  Used by value optimisation with `ValueOptConfig.paraphrase_max` > 0.
    paraphrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", tuple(self.keep))  # a list from JSON
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))


@dataclass
class EditBatch:
    input_ids: torch.Tensor  # (B, L) long, right-padded
    attention_mask: torch.Tensor  # (B, L) long
    labels: torch.Tensor  # (B, L) long, shifted: token predicted at t, or IGNORE
    target_lengths: list[int]  # target tokens per fact
    key_mask: torch.Tensor | None = None  # (B, L) bool, rows of the edit; None = predict_mask

    @property
    def predict_mask(self) -> torch.Tensor:
        """(B, L) bool: positions whose logits predict a target token."""
        return self.labels != IGNORE

    @property
    def keyed_mask(self) -> torch.Tensor:
        """(B, L) bool: positions an edit is keyed on (its rows)."""
        return self.predict_mask if self.key_mask is None else self.key_mask

    def to(self, device: torch.device | str) -> EditBatch:
        return EditBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.target_lengths,
            None if self.key_mask is None else self.key_mask.to(device),
        )


def paraphrase_edits(requests: Sequence[EditRequest], k: int) -> list[tuple[EditRequest, int]]:
    """Each request's first k paraphrases as edits of their own (its target and subject),
    with the index of the request each stands for."""
    return [
        (EditRequest(p, r.target, r.subject), i)
        for i, r in enumerate(requests)
        for p in r.paraphrases[:k]
    ]


def target_prefix(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """ " " when the tokenizer marks word starts with a space and the prompt lacks one."""
    if not prompt or prompt[-1].isspace():
        return ""
    spaced = tokenizer(" x", add_special_tokens=False)["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    # SentencePiece with a dummy prefix (Llama-2 style) already marks a bare word as a
    # word start ("x" -> "▁x"): adding a space would give an extra "▁" token.
    first = tokenizer.convert_ids_to_tokens(bare[:1])
    if first and str(first[0]).startswith("\u2581"):
        return ""
    return " " if spaced != bare else ""


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str
) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids), tokenised separately per MALMEN.md §2."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    target_ids = list(
        tokenizer(target_prefix(tokenizer, prompt) + target, add_special_tokens=False)["input_ids"]
    )
    if not prompt_ids or not target_ids:
        raise EmptyEditError(f"empty prompt or target: {prompt!r} -> {target!r}")
    return prompt_ids, target_ids


def subject_span(prompt: str, subject: str) -> re.Pattern[str] | None:
    """A pattern matching the subject in the prompt (exact case first, then any case)."""
    subject = subject.strip()
    if not subject:
        return None
    for flags in (0, re.IGNORECASE):
        pattern = re.compile(re.escape(subject), flags)
        if pattern.search(prompt):
            return pattern
    return None


def subject_last_token(tokenizer: PreTrainedTokenizerBase, subject: str) -> int:
    """The id of a subject's last token as it reads inside a sentence (after a space): the
    token a subject-keyed edit is read at."""
    return int(tokenizer(" " + subject.strip(), add_special_tokens=False).input_ids[-1])


def subject_token_indices(
    tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str | None
) -> list[int]:
    """Indices (in the prompt's own token ids) of the tokens overlapping the subject's last
    occurrence in the prompt (as `subject_span` finds it), in order; [] when there is none."""
    pattern = subject_span(prompt, subject or "")
    if pattern is None:
        return []
    start, end = list(pattern.finditer(prompt))[-1].span()
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
        return [
            i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start
        ]
    # slow tokenizers: the tokens of the prompt up to the subject's start and end
    first = len(tokenizer(prompt[:start], add_special_tokens=True)["input_ids"])
    last = len(tokenizer(prompt[:end], add_special_tokens=True)["input_ids"]) - 1
    return list(range(min(first, last), last + 1))


def subject_token_index(
    tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str | None, which: int = -1
) -> int | None:
    """Index (in the prompt's own token ids) of one of the subject's tokens in the prompt —
    `which` counts them as a list index does (−1 the last, −2 the one before it), clamped to
    the first token for a shorter subject — or None when the subject is not in the prompt."""
    hits = subject_token_indices(tokenizer, prompt, subject)
    if not hits:
        return None
    return hits[max(which, -len(hits))] if which < 0 else hits[min(which, len(hits) - 1)]


def encode_edits(
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    max_length: int | None = None,
    key_position: KeyMask = "predict",
    subject_token: int = -1,
) -> EditBatch:
    """Tokenise edit pairs into one right-padded batch with shifted labels (and, with
    key_position "subject", a key mask at one token of each subject: `subject_token` −1 its
    last, −2 the one before, as in `subject_token_index`; with "template", at every prompt
    token but the subject's — none for a request whose subject is not in its prompt)."""
    if not requests:
        raise ValueError("no edit requests")
    rows: list[tuple[list[int], list[int]]] = []
    for r in requests:
        p, t = tokenize_pair(tokenizer, r.prompt, r.target)
        if max_length is not None and len(p) + len(t) > max_length:
            raise EditTooLongError(
                f"prompt + target is {len(p) + len(t)} tokens, over the limit of {max_length}: "
                f"{r.prompt[:60]!r}"
            )
        rows.append((p, t))
    # The last target token is never fed to the model: nothing after it is predicted.
    length = max(len(p) + len(t) - 1 for p, t in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for b, (p, t) in enumerate(rows):
        seq = (p + t)[:-1]
        input_ids[b, : len(seq)] = torch.tensor(seq)
        attention_mask[b, : len(seq)] = 1
        # logits at position len(p)-1+k predict target token k
        start = len(p) - 1
        labels[b, start : start + len(t)] = torch.tensor(t)
    batch = EditBatch(input_ids, attention_mask, labels, [len(t) for _, t in rows])
    if key_position == "subject":
        key_mask = batch.predict_mask.clone()
        for b, r in enumerate(requests):
            i = subject_token_index(tokenizer, r.prompt, r.subject, subject_token)
            if i is not None and i < len(rows[b][0]):
                key_mask[b] = False
                key_mask[b, i] = True
        batch.key_mask = key_mask
    elif key_position == "template":
        key_mask = torch.zeros_like(batch.predict_mask)
        for b, r in enumerate(requests):
            subject = subject_token_indices(tokenizer, r.prompt, r.subject)
            if subject:
                key_mask[b, : len(rows[b][0])] = True
                key_mask[b, subject] = False
        batch.key_mask = key_mask
    elif key_position != "predict":
        raise ValueError(
            f"key_position must be 'predict', 'subject' or 'template', not {key_position!r}"
        )
    return batch
