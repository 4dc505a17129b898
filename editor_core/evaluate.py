"""Evaluation of editors (MALMEN.md §4): ES, GS, LS (ordinary / neighbourhood), LS-gold,
the generation check, edit wall time and peak memory.

All accuracies are teacher-forced token accuracies averaged per example, in float32 under
`torch.no_grad`, on right-padded batches built with `encode_edits`.  LS compares the edited
model's argmax with the UNEDITED model's argmax at the positions that predict the answer
tokens; a locality prompt without an answer is scored on the positions that predict the
base model's own greedy continuation (`GREEDY_TOKENS` tokens).  `prepare_locality` runs on
the unedited model once; the edited model is then compared against that record.

The harness functions (`run_simultaneous`, `run_sequential`, `run_tradeoff`) take any
editor with `compute_delta(requests, progress) -> WeightDelta`; joint mode also needs
`compute_rows` / `lambdas` (MalmenEditor).
"""

from __future__ import annotations

import itertools
import logging
import random
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from editor_core.adapters import ModelAdapter
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.data.formats import Fact, LocalityPrompt, neighbour_subject
from editor_core.data.relations import RELATIONS
from editor_core.editor import WeightDelta
from editor_core.encoding import (
    EditRequest,
    normalise_prompt,
    subject_last_token,
    tokenize_pair,
)
from editor_core.loading import LoadedModel
from editor_core.metrics import token_accuracy
from editor_core.resume import (
    Resume,
    full_logits,
    logits_at_positions,
    positions,
    resumed_logits,
    scored_pass,
)

log = logging.getLogger(__name__)

GREEDY_TOKENS = 4  # tokens of the base model's continuation scored for answer-less prompts
BATCH_SIZE = 32


# The project's targets for N simultaneous edits of unseen test facts (docs/results.md,
# "Where we stand"): the least each metric must reach; the LS target holds for ordinary
# and neighbourhood prompts alike.
TARGETS: dict[int, dict[str, float]] = {
    16: {"es": 0.98, "gs": 0.85, "ls_ordinary": 0.95, "ls_neighborhood": 0.95, "generation": 0.95},
    256: {"es": 0.95, "gs": 0.80, "ls_ordinary": 0.90, "ls_neighborhood": 0.90, "generation": 0.90},
    1024: {
        "es": 0.90,
        "gs": 0.70,
        "ls_ordinary": 0.85,
        "ls_neighborhood": 0.85,
        "generation": 0.85,
    },
}
# Joint mode over sequential batches of 64: the first batch's ES after the 16th batch.
SEQUENTIAL_TARGET = (16, 0.9)


def against_targets(
    metrics: Mapping[str, Any], n: int
) -> dict[str, tuple[float | None, float, bool]]:
    """Per targeted metric at `n` simultaneous edits: (measured, target, met); {} when `n`
    has no target row.  A metric that was not measured (None or absent) is not met."""
    out: dict[str, tuple[float | None, float, bool]] = {}
    for metric, target in TARGETS.get(n, {}).items():
        value = metrics.get(metric)
        out[metric] = (value, target, value is not None and value >= target)
    return out


class Editor(Protocol):
    def compute_delta(
        self, requests: Sequence[EditRequest], progress: bool = False
    ) -> WeightDelta: ...


# -- greedy decoding ----------------------------------------------------------------------
@torch.no_grad()
def greedy_tokens(
    model: torch.nn.Module, prompts: Sequence[list[int]], n_tokens: int, pad_id: int = 0
) -> list[list[int]]:
    """`n_tokens` greedy tokens after each prompt (right-padded batch, no KV cache)."""
    device = next(model.parameters()).device
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    ids = torch.full(
        (len(prompts), int(lengths.max()) + n_tokens), pad_id, dtype=torch.long, device=device
    )  # (B, L + n)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = torch.tensor(p, device=device)
    rows = torch.arange(len(prompts), device=device)
    out = []
    for _ in range(n_tokens):
        width = int(lengths.max())
        mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
        last = (lengths - 1)[:, None]  # (B, 1): only the last position is projected
        logits = logits_at_positions(
            model, last, device, input_ids=ids[:, :width], attention_mask=mask
        )
        nxt = logits[:, 0].float().argmax(-1)  # (B,)
        ids[rows, lengths] = nxt
        out.append(nxt)
        lengths = lengths + 1
    return torch.stack(out, 1).tolist() if out else [[] for _ in prompts]


def generation_check(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[EditRequest],
    batch_size: int = BATCH_SIZE,
) -> list[float]:
    """1.0 where the greedy continuation starts with the target (whitespace-normalised)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for i in range(0, len(requests), batch_size):
        chunk = requests[i : i + batch_size]
        pairs = [tokenize_pair(tokenizer, r.prompt, r.target) for r in chunk]
        n = max(len(t) for _, t in pairs) + 1
        gen = greedy_tokens(model, [p for p, _ in pairs], n, pad)
        for r, g in zip(chunk, gen, strict=True):
            text = " ".join(tokenizer.decode(g, skip_special_tokens=True).split())
            out.append(float(text.startswith(" ".join(r.target.split()))))
    return out


# -- locality -----------------------------------------------------------------------------
@dataclass
class LocalitySet:
    """Locality prompts tokenised, with the unedited model's argmax at scored positions."""

    prompts: list[LocalityPrompt]
    sequences: list[list[int]]  # prompt ids + scored continuation ids (last one not fed)
    start: list[int]  # first scored position (the last prompt token)
    gold: list[list[int] | None]  # gold answer ids, None without an answer
    base: list[torch.Tensor]  # (k,) unedited argmax at the k scored positions
    # (k,) the unedited model's log-probability margin of that argmax over the runner-up
    margin: list[torch.Tensor] = field(default_factory=list)
    # the states entering the lowest edited block, where scoring can start (`resume`)
    resume: Resume | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, idx: Sequence[int]) -> LocalitySet:
        return LocalitySet(
            prompts=[self.prompts[i] for i in idx],
            sequences=[self.sequences[i] for i in idx],
            start=[self.start[i] for i in idx],
            gold=[self.gold[i] for i in idx],
            base=[self.base[i] for i in idx],
            margin=[self.margin[i] for i in idx] if self.margin else [],
            resume=self.resume.subset(idx) if self.resume is not None else None,
        )

    def concat(self, other: LocalitySet) -> LocalitySet:
        """This set's prompts, then `other`'s; the states go along when both have them (or
        one side is empty) and they were taken alike (`Resume.concat`)."""
        if not len(other) or not len(self):
            return self if len(self) else other
        resume = None
        if self.resume is not None and other.resume is not None:
            resume = self.resume.concat(other.resume)
        return LocalitySet(
            self.prompts + other.prompts,
            self.sequences + other.sequences,
            self.start + other.start,
            self.gold + other.gold,
            self.base + other.base,
            self.margin + other.margin,
            resume,
        )


@torch.no_grad()
def _logits_at(
    model: torch.nn.Module, loc: LocalitySet, pad: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Per prompt, the float logits (k, V) at its k scored positions, on the model's device;
    from the stored states on where `loc` has them (`editor_core.resume`) and they still
    hold."""
    resume = loc.resume if loc.resume is not None and loc.resume.usable(model) else None
    for i in range(0, len(loc), batch_size):
        seqs = [s[:-1] for s in loc.sequences[i : i + batch_size]]
        keep, counts = positions(loc.start[i : i + batch_size], [len(s) for s in seqs])
        if resume is not None:
            logits = resumed_logits(model, resume, range(i, i + len(seqs)), keep)
        else:
            logits = full_logits(model, seqs, pad, keep)
        for b, k in enumerate(counts):
            yield logits[b, :k].float()  # positions predicting the continuation


def _argmax_at(
    model: torch.nn.Module, loc: LocalitySet, pad: int, batch_size: int
) -> list[torch.Tensor]:
    return [x.argmax(-1).cpu() for x in _logits_at(model, loc, pad, batch_size)]


MARGIN_EDGES = (0.5, 1.0, 2.0, 4.0)  # nats: the bins `score_edited(margin_edges=…)` reports
# An unedited prediction this far (nats) above its runner-up is one the model is sure of:
# at validation N = 256, 96 % of those kept their token and 63 % of those under 0.5 nats
# (docs/results.md, seventeenth session), so LS over them separates damage from near-ties.
SURE_MARGIN = 1.0


def margin_bins(
    kept: torch.Tensor, margin: torch.Tensor, edges: Sequence[float]
) -> list[dict[str, float]]:
    """LS per bin of the unedited margin over scored positions (`kept`, `margin`: (P,)):
    one dict per bin [edges[i-1], edges[i]) (0 and ∞ at the ends) with its bounds, share of
    the positions and agreement (NaN for an empty bin) — whether what an edit changed were
    near-ties or answers the model was sure of."""
    out = []
    for lo, hi in itertools.pairwise([0.0, *edges, float("inf")]):
        sel = (margin >= lo) & (margin < hi)
        n = int(sel.sum())
        share = n / max(1, margin.numel())
        out.append(
            {
                "lo": lo,
                "hi": hi,
                "share": share,
                "ls": float(kept[sel].mean()) if n else float("nan"),
            }
        )
    return out


def prepare_locality(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[LocalityPrompt],
    greedy: int = GREEDY_TOKENS,
    batch_size: int = BATCH_SIZE,
    adapter: ModelAdapter | None = None,
) -> LocalitySet:
    """Tokenise locality prompts and record the UNEDITED model's argmax (call before editing).
    With the `adapter` of the editor whose edits the set will be scored on, each prompt also
    keeps the states entering its lowest edited block, and later scoring starts there
    (`editor_core.resume`)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_ids: list[list[int]] = []
    gold: list[list[int] | None] = []
    for p in prompts:
        if p.answer:
            pid, aid = tokenize_pair(tokenizer, p.prompt, p.answer)
            prompt_ids.append(pid)
            gold.append(aid)
        else:
            prompt_ids.append(list(tokenizer(p.prompt, add_special_tokens=True)["input_ids"]))
            gold.append(None)
    free = [i for i, g in enumerate(gold) if g is None]
    cont: dict[int, list[int]] = {}
    for j in range(0, len(free), batch_size):
        idx = free[j : j + batch_size]
        for i, toks in zip(
            idx, greedy_tokens(model, [prompt_ids[i] for i in idx], greedy, pad), strict=True
        ):
            cont[i] = toks
    sequences = [
        p + (g if g is not None else cont[i])
        for i, (p, g) in enumerate(zip(prompt_ids, gold, strict=True))
    ]
    loc = LocalitySet(list(prompts), sequences, [len(p) - 1 for p in prompt_ids], gold, [])

    def record(x: torch.Tensor) -> None:
        top2 = x.log_softmax(-1).topk(2, dim=-1)  # (k, 2)
        loc.base.append(top2.indices[:, 0].cpu())
        loc.margin.append((top2.values[:, 0] - top2.values[:, 1]).cpu())

    loc.resume = scored_pass(model, adapter, sequences, loc.start, pad, batch_size, record)
    return loc


def locality_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    loc: LocalitySet,
    batch_size: int = BATCH_SIZE,
    parts: Mapping[str, Sequence[int]] | None = None,
    margin_edges: Sequence[float] | None = None,
) -> dict[str, Any]:
    """{"ls": agreement with the unedited argmax, "ls_gold": accuracy vs gold answers,
    "ls_sure": agreement over the scored positions where the unedited model was sure
    (margin ≥ SURE_MARGIN nats over its runner-up), "sure_share": their share}, and
    "ls_<name>" (agreement over those prompts only) for each named part of `loc`; with
    `margin_edges`, "by_margin": `margin_bins` over them."""
    names = [f"ls_{name}" for name in parts or {}]
    if not len(loc):
        empty = {"ls": None, "ls_gold": None, "ls_sure": None, "sure_share": None}
        return {**empty, **dict.fromkeys(names), **({"by_margin": []} if margin_edges else {})}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    now = _argmax_at(model, loc, pad, batch_size)
    same = [(a == b).float() for a, b in zip(now, loc.base, strict=True)]  # per position
    ls = [float(x.mean()) for x in same]
    gold = [
        float((a == torch.tensor(g)).float().mean())
        for a, g in zip(now, loc.gold, strict=True)
        if g is not None
    ]
    out: dict[str, Any] = {
        "ls": _mean(ls),
        "ls_gold": _mean(gold),
        "ls_sure": None,
        "sure_share": None,
    }
    if loc.margin:
        kept, margin = torch.cat(same), torch.cat(loc.margin)
        sure = margin_bins(kept, margin, (SURE_MARGIN,))[1]
        out["sure_share"] = sure["share"]
        out["ls_sure"] = sure["ls"] if sure["share"] else None
        if margin_edges is not None:
            out["by_margin"] = margin_bins(kept, margin, margin_edges)
    for name, idx in (parts or {}).items():
        out[f"ls_{name}"] = _mean([ls[i] for i in idx])
    return out


def changed_prompts(
    model: torch.nn.Module,
    tokenizer: Any,
    loc: LocalitySet,
    batch_size: int = BATCH_SIZE,
    min_margin: float = 0.0,
) -> list[int]:
    """The prompts of `loc` whose argmax now differs from the unedited model's at a scored
    position where the unedited model's margin over its runner-up was ≥ `min_margin`
    nats (0: at any scored position)."""
    if not len(loc):
        return []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    now = _argmax_at(model, loc, pad, batch_size)
    out = []
    for i, (a, b) in enumerate(zip(now, loc.base, strict=True)):
        moved = a != b  # (k,)
        if min_margin > 0 and loc.margin:
            moved &= loc.margin[i] >= min_margin
        if bool(moved.any()):
            out.append(i)
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# -- memory -------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one evaluation -----------------------------------------------------------------------
def _phrasing_relations(prompt: str, subject: str) -> set[str]:
    """The data generator's relations with a phrasing that, filled with `subject`, asks
    what `prompt` asks (`normalise_prompt`); a few phrasings are shared by two relations
    ("The home city of {s} is")."""
    want = normalise_prompt(prompt)
    return {
        r.name
        for r in RELATIONS
        if any(normalise_prompt(p.format(s=subject)) == want for p in r.phrasings)
    }


def requests_of(facts: Sequence[Fact], edited: Sequence[Fact] | None = None) -> list[EditRequest]:
    """The edits of `facts`, each with its keep prompts less those that ask what another
    fact of `edited` (default: `facts`) about the same subject changes — as a client would
    not ask to keep what it edits: that fact's prompt or a paraphrase, or, for the data
    generator's facts, any phrasing of that fact's relation."""
    by_subject: dict[str, list[Fact]] = {}
    for g in facts if edited is None else edited:
        if g.subject:
            by_subject.setdefault(g.subject, []).append(g)
    out = []
    for f in facts:
        others = [g for g in by_subject.get(f.subject, []) if g.id != f.id] if f.keep else []
        keep = f.keep
        if others:
            asked = {normalise_prompt(p) for g in others for p in (g.prompt, *g.paraphrases)}
            rels = {g.relation for g in others if g.relation}
            keep = tuple(
                k
                for k in f.keep
                if normalise_prompt(k) not in asked and not _phrasing_relations(k, f.subject) & rels
            )
        out.append(EditRequest(f.prompt, f.target, f.subject or None, keep, f.edit_paraphrases))
    return out


def paraphrase_requests(facts: Sequence[Fact]) -> list[EditRequest]:
    return [EditRequest(p, f.target, f.subject or None) for f in facts for p in f.paraphrases]


def same_subject_prompts(
    pool: Sequence[Fact], edited: Sequence[Fact], cap: int = 512
) -> list[LocalityPrompt]:
    """The prompts of the facts in `pool` that name an edited subject but are not edited
    themselves — the subject's other relations, which a subject-keyed edit must leave alone
    (at most `cap`, in pool order)."""
    subjects = {f.subject for f in edited if f.subject}
    ids = {f.id for f in edited}
    return [LocalityPrompt(f.prompt) for f in pool if f.subject in subjects and f.id not in ids][
        :cap
    ]


def score_edited(
    loaded: LoadedModel,
    facts: Sequence[Fact],
    ordinary: LocalitySet,
    neighborhood: LocalitySet,
    batch_size: int = BATCH_SIZE,
    same_subject: LocalitySet | None = None,
    margin_edges: Sequence[float] | None = None,
    protected: LocalitySet | None = None,
) -> dict[str, Any]:
    """All quality metrics of the model as it is now, for the edits `facts`; LS on the
    neighbourhood prompts also split by whether the prompt's subject ends in an edited
    subject's last token (`ls_nb_shared_token`, with `nb_shared_token_share`) or not
    (`ls_nb_own_token`): a subject-keyed edit reaches the first kind (docs/results.md); and
    on the neighbourhood prompts whose gold answer the unedited model gave (`ls_nb_known`,
    with `nb_known_share`): the facts about other subjects the model knew, kept or not —
    LS against the unedited model also counts a changed non-answer ("the capital of" →
    "Helsinki") as a loss.  `same_subject` (prepared from `same_subject_prompts`): LS on the
    edited subjects' other facts (`ls_same_subject`, with `n_same_subject`).  With
    `margin_edges` (e.g. MARGIN_EDGES), `ls_ord_by_margin`: LS on the ordinary prompts per
    bin of the unedited margin (`margin_bins`).  `protected` (prepared from the prompts an
    editor was told to hold, `MalmenEditor.protect`): LS on them (`ls_protected`, with
    `n_protected`), and LS on the neighbourhood prompts that are not among them
    (`ls_nb_unprotected`, with `nb_unprotected_share`), split by whether a listed prompt
    names their subject (`ls_nb_unprotected_named` / `_unnamed`)."""
    model, tok = loaded.model, loaded.tokenizer
    reqs, para = requests_of(facts), paraphrase_requests(facts)
    ordinary_s = locality_scores(model, tok, ordinary, batch_size, margin_edges=margin_edges)
    _, shares = last_token_sharing(tok, facts)
    known = [
        (i, shares[p.prompt]) for i, p in enumerate(neighborhood.prompts) if p.prompt in shares
    ]
    parts = {
        "nb_shared_token": [i for i, shared in known if shared],
        "nb_own_token": [i for i, shared in known if not shared],
        "nb_known": knew_answer(neighborhood),
    }
    if protected is not None:
        parts.update(_unprotected_parts(facts, neighborhood, protected))
    neighbour_s = locality_scores(model, tok, neighborhood, batch_size, parts)
    return {
        "es": _mean(token_accuracy(model, tok, reqs, batch_size)),
        "gs": _mean(token_accuracy(model, tok, para, batch_size)) if para else None,
        "generation": _mean(generation_check(model, tok, reqs, batch_size)),
        "ls_ordinary": ordinary_s["ls"],
        "ls_ordinary_sure": ordinary_s["ls_sure"],
        "ordinary_sure_share": ordinary_s["sure_share"],
        "ls_gold_ordinary": ordinary_s["ls_gold"],
        "ls_neighborhood": neighbour_s["ls"],
        "ls_neighborhood_sure": neighbour_s["ls_sure"],
        "neighborhood_sure_share": neighbour_s["sure_share"],
        "ls_gold_neighborhood": neighbour_s["ls_gold"],
        "ls_nb_shared_token": neighbour_s["ls_nb_shared_token"],
        "ls_nb_own_token": neighbour_s["ls_nb_own_token"],
        "nb_shared_token_share": len(parts["nb_shared_token"]) / len(known) if known else None,
        "ls_nb_known": neighbour_s["ls_nb_known"],
        "nb_known_share": len(parts["nb_known"]) / len(neighborhood) if len(neighborhood) else None,
        "ls_same_subject": (
            locality_scores(model, tok, same_subject, batch_size)["ls"] if same_subject else None
        ),
        "n_same_subject": len(same_subject) if same_subject is not None else None,
        **({"ls_ord_by_margin": ordinary_s["by_margin"]} if margin_edges is not None else {}),
        **(
            _protected_scores(
                loaded, protected, neighborhood, neighbour_s, parts["nb_unprotected"], batch_size
            )
            if protected is not None
            else {}
        ),
    }


def _unprotected_parts(
    facts: Sequence[Fact], neighborhood: LocalitySet, protected: LocalitySet
) -> dict[str, list[int]]:
    """The neighbourhood prompts not on the protected list (`nb_unprotected`), split by
    whether their subject is named in a listed prompt (`nb_unprotected_named`: the list
    holds that subject's key in another question) or not (`nb_unprotected_unnamed`)."""
    held = {p.prompt for p in protected.prompts}
    subject = {p.prompt: neighbour_subject(f, p.prompt) for f in facts for p in f.neighborhood}
    listed = [p.prompt for p in protected.prompts]
    out: dict[str, list[int]] = {"nb_unprotected": [], "nb_unprotected_named": []}
    for i, p in enumerate(neighborhood.prompts):
        if p.prompt in held:
            continue
        out["nb_unprotected"].append(i)
        s = subject.get(p.prompt)
        if s is not None and any(s in t for t in listed):
            out["nb_unprotected_named"].append(i)
    named = set(out["nb_unprotected_named"])
    out["nb_unprotected_unnamed"] = [i for i in out["nb_unprotected"] if i not in named]
    return out


def _protected_scores(
    loaded: LoadedModel,
    protected: LocalitySet,
    neighborhood: LocalitySet,
    neighbour_s: Mapping[str, Any],
    unprotected: Sequence[int],
    batch_size: int,
) -> dict[str, Any]:
    """`score_edited`'s protected-prompt fields."""
    held = locality_scores(loaded.model, loaded.tokenizer, protected, batch_size)
    return {
        "ls_protected": held["ls"],
        "ls_protected_sure": held["ls_sure"],
        "n_protected": len(protected),
        "ls_nb_unprotected": neighbour_s["ls_nb_unprotected"],
        "nb_unprotected_share": len(unprotected) / len(neighborhood) if len(neighborhood) else None,
        "ls_nb_unprotected_named": neighbour_s["ls_nb_unprotected_named"],
        "ls_nb_unprotected_unnamed": neighbour_s["ls_nb_unprotected_unnamed"],
    }


def knew_answer(loc: LocalitySet) -> list[int]:
    """The prompts of `loc` with a gold answer that the unedited model's argmax gives at
    every answer token (prepare_locality recorded it)."""
    return [
        i
        for i, (g, b) in enumerate(zip(loc.gold, loc.base, strict=True))
        if g is not None and b.tolist() == list(g)
    ]


def timed_delta(
    editor: Editor,
    requests: Sequence[EditRequest],
    device: torch.device,
    progress: bool = False,
) -> tuple[WeightDelta, dict[str, float]]:
    """Compute a delta, with its wall time and peak memory (RSS; CUDA allocator on GPU);
    `progress`: the editor's own progress bars (value optimisation, fine-tuning steps)."""
    rss0 = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    delta = editor.compute_delta(requests, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cost = {
        "edit_seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_growth_mb": peak_rss_mb() - rss0,
    }
    if device.type == "cuda":
        cost["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return delta, cost


def evaluate_edit(
    loaded: LoadedModel,
    editor: Editor,
    facts: Sequence[Fact],
    ordinary: LocalitySet,
    neighborhood: LocalitySet,
    batch_size: int = BATCH_SIZE,
    same_subject: LocalitySet | None = None,
    progress: bool = False,
    protected: LocalitySet | None = None,
) -> dict[str, Any]:
    """Apply all `facts` at once, score (`protected`: see `score_edited`), restore the base
    weights (bit-exact)."""
    masters = snapshot(loaded.adapter)
    device = next(loaded.model.parameters()).device
    try:
        delta, cost = timed_delta(editor, requests_of(facts), device, progress)
        apply_delta(loaded.adapter, delta, masters)
        return {
            "n": len(facts),
            **score_edited(
                loaded,
                facts,
                ordinary,
                neighborhood,
                batch_size,
                same_subject,
                protected=protected,
            ),
            **cost,
            **({"protected_held": len(getattr(editor, "last_held", []))} if protected else {}),
            **({"scope_gate": delta.gate.threshold} if delta.gate is not None else {}),
        }
    finally:
        restore(loaded.adapter, masters)


def neighbourhood_of(facts: Sequence[Fact], pool: LocalitySet) -> LocalitySet:
    """The neighbourhood prompts of `facts` that are in `pool`; the whole pool when the facts
    carry none (a free-standing neighbourhood file)."""
    wanted = {p for f in facts for p in f.neighborhood}
    if not wanted:
        return pool
    return pool.subset([i for i, p in enumerate(pool.prompts) if p in wanted])


def last_token_sharing(tokenizer: Any, facts: Sequence[Fact]) -> tuple[list[bool], dict[str, bool]]:
    """Which keys of a set of simultaneous edits meet at the token a subject-keyed edit is
    read at (the subject's last): per fact, whether another edited subject ends in the same
    token; per neighbourhood prompt of the facts whose subject can be read off its fact's
    template (`neighbour_subject`), whether that subject ends in an edited subject's last
    token.  Facts without a subject share nothing."""
    subjects_of: dict[int, set[str]] = {}
    for f in facts:
        if f.subject:
            subjects_of.setdefault(subject_last_token(tokenizer, f.subject), set()).add(f.subject)
    edits = [
        bool(f.subject) and len(subjects_of[subject_last_token(tokenizer, f.subject)]) > 1
        for f in facts
    ]
    neighbours = {
        p.prompt: subject_last_token(tokenizer, s) in subjects_of
        for f in facts
        for p in f.neighborhood
        if (s := neighbour_subject(f, p.prompt)) is not None
    }
    return edits, neighbours


def with_overrides(
    editor: Any,
    eta_scale: float | None,
    lambda_override: float | None,
    preserve: float | None = None,
) -> Any:
    """Set edit-time knobs on an editor whose `config` is a dataclass (MalmenEditor):
    η scale, λ for every module, and the weight μ of the preservation prior (0 = plain
    MALMEN ridge solve).  None leaves a knob as the editor has it."""
    changes: dict[str, Any] = {}
    if eta_scale is not None:
        changes["eta_scale"] = eta_scale
    if lambda_override is not None:
        changes["lambda_override"] = lambda_override
    if preserve is not None:
        changes["preserve"] = preserve
    if changes:
        editor.config = replace(editor.config, **changes)
    return editor


def sample_facts(facts: Sequence[Fact], n: int, seed: int) -> list[Fact] | None:
    """n facts drawn without replacement, or None when the set is smaller than n."""
    if n > len(facts):
        return None
    return [facts[i] for i in _first_draw(len(facts), n, seed)]


def _first_draw(size: int, n: int, seed: int) -> list[int]:
    return random.Random(seed * 100_003 + n).sample(range(size), n)


def sample_draws(facts: Sequence[Fact], n: int, seed: int, draws: int) -> list[list[Fact]]:
    """Up to `draws` disjoint sets of n facts — independent repeats of an N-edit
    measurement.  The first is `sample_facts(facts, n, seed)` (a one-draw run scores the
    facts it always has), the others come from the rest of the set; fewer than `draws`
    when the set holds fewer than draws·n facts, [] when it holds fewer than n."""
    if n > len(facts) or draws < 1:
        return []
    first = _first_draw(len(facts), n, seed)
    taken = set(first)
    rest = [i for i in range(len(facts)) if i not in taken]
    more = min(draws - 1, len(rest) // n)
    picked = random.Random(f"draws/{seed}/{n}").sample(rest, more * n)
    chunks = [first] + [picked[k * n : (k + 1) * n] for k in range(more)]
    return [[facts[i] for i in chunk] for chunk in chunks]


# The metrics whose spread over draws is reported (`summarise_draws`).
SPREAD_METRICS = (
    "es",
    "gs",
    "generation",
    "ls_ordinary",
    "ls_ordinary_sure",
    "ls_neighborhood",
    "ls_neighborhood_sure",
)
BOOTSTRAP_RESAMPLES = 10_000
MIN_DRAWS_FOR_CI = 5  # a bootstrap over fewer draws understates the spread


def summarise_draws(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One N-edit result from the results of independent draws: each numeric field's mean
    over the draws that measured it (peak memory: the largest; a field every draw gives
    the same value, such as "n", keeps it), "n_draws", and with two or
    more draws "draws" (every draw's result) and "spread": per metric of SPREAD_METRICS,
    the standard deviation over draws ("sd") and, from MIN_DRAWS_FOR_CI draws, a 95 %
    percentile-bootstrap interval for the mean ("ci95": resampling whole draws, so it
    holds the variation between sets of facts as well as within them)."""
    if len(rows) == 1:
        return {**rows[0], "n_draws": 1}
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if not values or isinstance(values[0], bool):
            continue
        if all(v == values[0] for v in values):
            out[key] = values[0]  # e.g. "n"
        else:
            out[key] = max(values) if "peak" in key else sum(values) / len(values)
    spread: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(0)
    for metric in SPREAD_METRICS:
        measured = [r[metric] for r in rows if r.get(metric) is not None]
        if len(measured) < 2:
            continue
        entry: dict[str, Any] = {"sd": float(np.std(measured, ddof=1)), "draws": len(measured)}
        if len(measured) >= MIN_DRAWS_FOR_CI:
            entry["ci95"] = bootstrap_ci(measured, rng)
        spread[metric] = entry
    return {**out, "n_draws": len(rows), "spread": spread, "draws": list(rows)}


def bootstrap_ci(values: Sequence[float], rng: np.random.Generator) -> list[float]:
    """A 95 % percentile-bootstrap interval [lo, hi] for the mean of `values` (one value
    per draw: resampling them resamples whole draws); callers seed `rng`, so reports
    reproduce."""
    x = np.asarray(values, dtype=float)
    picks = rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))
    means = x[picks].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
