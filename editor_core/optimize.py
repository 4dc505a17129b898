"""Edit values by optimisation (ROME/MEMIT's way) instead of MALMEN's hyper-network.

MALMEN turns each fact into rows (key u, value difference d) and solves one least-squares
problem per edited module.  Its hyper-network predicts d from the value-gradient in one
shot; that needs meta-training, and the editor shipped for the top layers keys its rows on
the positions predicting the target, which the relation template dominates (docs/results.md,
key geometry).  Keyed at the subject's last token in the middle layers, a fact's rows
separate it from its neighbours, but this CPU could not meta-train a hyper-network there.

This module produces the rows without a hyper-network (`EditorConfig.values="optimise"`):

1. per fact, a change δ of the residual stream after the LAST edited layer, at the
   subject's last token, found by a few Adam steps on the target's cross-entropy in the
   edit prompt and in variants of it (`prefixes`: text before the prompt — the edit should
   not depend on what precedes it — or a frame around it, such as the fact asked as a
   question), with ‖δ‖ clamped to `max_norm`·‖residual‖ (a clamp that can shrink with
   the number of edits in the solve, `ValueOptConfig.clamp_for`) and, optionally, ROME's
   essence-drift penalty (`essence_weight`);
2. spread over the edited layers lowest first, as MEMIT does: layer j's rows ask for
   1/(layers left) of what is still missing at the last layer once the shifts of the layers
   below are in.  Keys are the down-projection inputs at the subject's last token,
   averaged over the variants.  (The spread assumes each edited module's output is added
   to the residual stream as it is — true of the registered architectures except Gemma 2/3,
   which normalise the MLP output first; there it is an approximation.)

The solve is MALMEN's (with the preservation prior, which must be strong here: μ in the
thousands).  Step 1 is independent per subject (`group_subjects`): the facts that name
the same subject share one δ, found on their mean loss (a sum of per-group losses,
element-wise Adam, a per-group stop rule and scale) — their keys are the same token's, so
separate δs would contradict each other in the solve; a fact without a subject, or one
whose subject no other request names, is optimised on its own.  Step 2 depends on the whole request set, as
MEMIT's does; with a single edited layer there is no spread and every row is its own fact's.
Parametrisation: δ = s·θ with s the RMS element of the fact's own residual, so one
learning rate fits every layer and model; `weight_decay` penalises the mean square of θ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editor_core.adapters import ModelAdapter
from editor_core.anchors import anchor_pairs
from editor_core.encoding import (
    EditBatch,
    EditRequest,
    encode_edits,
    normalise_prompt,
    paraphrase_edits,
    subject_token_index,
)
from editor_core.hooks import shifted
from editor_core.loading import bf16_is_fast
from editor_core.progress import bar

log = logging.getLogger(__name__)

# Contexts each edit is optimised in: the bare prompt, and the fact asked as a question
# (a frame: the answer follows "Answer:" after the whole question, as in a Q&A exchange).
# Selected on validation (docs/val_optimise.md, ninth session): GS on question paraphrases
# 0.23 → 0.58 and on statements 0.40 → 0.46 against ("", "Here is a fact. "), ES −0.01.
DEFAULT_PREFIXES = ("", "Question: {prompt}?\nAnswer:")
PROMPT_SLOT = "{prompt}"  # a context with this slot is a frame around the prompt (`in_context`)


@dataclass(frozen=True)
class ValueOptConfig:
    steps: int = 100  # Adam steps per subject group at most (each stops at stop_loss)
    lr: float = 0.5  # Adam step on θ, δ = s · θ (s: RMS element of the fact's residual)
    weight_decay: float = 0.01  # on mean(θ²)
    stop_loss: float = 0.05  # a fact stops once its mean target NLL is below this
    max_norm: float = 2.0  # ‖δ‖ ≤ max_norm · ‖residual‖ at the subject token (MEMIT's clamp)
    # The clamp for a solve of many edits (`clamp_for`): with max_norm_ref_edits set, a
    # solve of N > ref edits clamps at max_norm − max_norm_per_doubling·⌈log2(N/ref)⌉, never
    # below max_norm_min.  The δs sit at the clamp (Adam runs each to the bound), and the
    # more edits one solve holds, the more their rows crowd each other and the prior: a
    # tighter bound then buys locality at less cost than a larger μ (docs/val_optimise.md,
    # thirteenth session).  None: max_norm at every N.
    max_norm_ref_edits: int | None = None
    max_norm_per_doubling: float = 0.25
    max_norm_min: float = 1.5
    # Contexts: a prefix, or a frame with a "{prompt}" slot (e.g. "Q: {prompt}? A:").
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    # bf16 autocast for the Adam steps only (keys, spread, solve: model dtype), on devices
    # where it is fast (`bf16_is_fast`: CUDA, a CPU with AVX-512 BF16 or AMX); elsewhere the
    # steps run in the model's dtype, since emulated bf16 is ~80× slower than float32.
    bf16: bool = True
    batch_facts: int = 32  # facts optimised together (memory only; results do not depend on it)
    # Facts that name the same subject share one δ, optimised on their mean loss: their
    # keys (the subject's last token) are nearly the same, so separate δs would ask the
    # solve for different values at one key and it would average them, or blow up the
    # shift trying.  False: one δ per fact (MEMIT's way).
    group_subjects: bool = True
    # Joint mode: at every version, re-spread the residual targets of ALL live edits from
    # the base weights (MEMIT over the union; forward passes only), instead of summing rows
    # that were each spread with their own batch's lower-layer shifts.
    respread: bool = True
    # The share of the remaining gap each edited layer takes: layer j of L (lowest first)
    # weighs 1 + upper_tilt·j/(L−1) and asks for its weight over the weights of the layers
    # left.  0: MEMIT's 1/(layers left).  > 0 leaves more of each change to the upper
    # layers, where a subject's last token carries more of what came before it (subjects
    # that end in the same token, "… College", meet less there).
    upper_tilt: float = 0.0
    # Refinement: once spread and solved, the edited model's residual at each fact's keyed
    # token falls short of its target (the prior and the other facts' rows pull the solve
    # away from every row).  refine > 0 re-spreads from the base weights with each target
    # moved past itself by refine × that shortfall, so the facts that fell furthest short
    # ask for most (one more forward pass and spread).  0: one spread.  Measured level or
    # worse on validation (docs/val_optimise.md, eleventh session): the shortfall is not what
    # limits ES there.
    refine: float = 0.0
    # The subject tokens an edit is keyed at, each counted as a list index counts (−1 the
    # last token, ROME/MEMIT's position; −2 the one before it; clamped to the subject's
    # length, and a token named twice after clamping is keyed once).  Each keyed token gets
    # its own δ (optimised together) and its own rows.  Subjects that end in the same token
    # ("… College") share much of that token's key at every layer
    # (scripts/collision_geometry.py); the token before it has read the subject's start.
    # With (−1, −2) the edit prompt and its paraphrases see both δs and a neighbour that
    # shares one of the two tokens sees one.
    subject_tokens: tuple[int, ...] = (-1,)
    # ROME/MEMIT's "essence drift" penalty: each δ is also applied in `essence_prompts`
    # ("{subject} is a"; more prompts: their mean), and essence_weight × the KL divergence of the
    # next-token distribution there from the unedited model's is added to its group's loss —
    # so the δ carries the new fact, not a new identity for the subject, and the subject's
    # other facts ("The capital of Germany is" after Germany's currency is edited) keep
    # their answers.  0: off (ROME/MEMIT use 0.0625).
    essence_weight: float = 0.0
    essence_prompts: tuple[str, ...] = ("{subject} is a",)
    # The same penalty on each request's own `keep` prompts (EditRequest.keep: prompts about
    # its subject that name another of its facts, sent by the client or written by the data
    # generator): keep_weight × the mean KL over them joins the group's loss, so the δ that
    # carries the new fact leaves the subject's other answers alone.  At most keep_max of
    # each request's prompts are used, the first ones (None: all).  0: off.
    keep_weight: float = 0.0
    keep_max: int | None = None
    # The same penalty on look-alike subjects: each request's prompt with its subject's
    # first words swapped for a fictional name ending in the subject's own last word
    # ("Calderon College" → "Alwina College", `anchors.substitutes`), `lookalikes` of them.
    # The δ is applied at the look-alike's keyed tokens — where the spread puts much of it,
    # since the two keys nearly coincide at every edited layer (scripts/collision_geometry.py)
    # — and lookalike_weight × the mean KL of the next token there joins the group's loss:
    # the δ is asked to carry the new answer only together with the subject's start, which
    # the layers above the edit still read.  Subjects of one word have no look-alike.  0: off.
    lookalike_weight: float = 0.0
    lookalikes: int = 2
    # Each request's first paraphrase_max paraphrases (EditRequest.paraphrases: the fact in
    # other words, sent with the edit) join its loss as contexts: the δ is optimised for
    # the mean target NLL over the edit's contexts and these, so it carries the fact, not
    # one wording of it.  0: off.
    paraphrase_max: int = 0
    # Those paraphrases in the spread too: each fact's key and value gap at every edited
    # layer are the mean over its contexts and its paraphrases (the same δ added at the
    # subject there), a paraphrase weighing paraphrase_keys × a context — MEMIT's averaging
    # over contexts, now over wordings, so the key holds more of the subject and less of
    # one phrasing of the relation.  The residual targets do not change (only the spread
    # reads it).  0: the rows are the contexts' alone.
    paraphrase_keys: float = 0.0

    def __post_init__(self) -> None:
        # contexts from JSON (FACTPATCH_EDITOR_CONFIG, a checkpoint's config.json) are a list
        object.__setattr__(self, "prefixes", tuple(self.prefixes))
        object.__setattr__(self, "subject_tokens", tuple(int(t) for t in self.subject_tokens))
        if not self.subject_tokens or len(set(self.subject_tokens)) != len(self.subject_tokens):
            raise ValueError(f"subject_tokens {self.subject_tokens} must be distinct, at least one")
        _check_upper_tilt(self.upper_tilt)
        if self.refine < 0:
            raise ValueError(f"refine {self.refine} must be ≥ 0")
        if self.max_norm <= 0 or self.max_norm_min <= 0:
            raise ValueError(
                f"the value clamp needs max_norm ({self.max_norm}) and max_norm_min "
                f"({self.max_norm_min}) > 0"
            )
        if self.essence_weight < 0:
            raise ValueError(f"essence_weight {self.essence_weight} must be ≥ 0")
        object.__setattr__(self, "essence_prompts", tuple(self.essence_prompts))
        bad = [x for x in self.essence_prompts if "{subject}" not in x]
        if self.essence_weight and (bad or not self.essence_prompts):
            raise ValueError(f"essence_prompts {bad or '()'} need a {{subject}} slot each")
        if self.keep_weight < 0:
            raise ValueError(f"keep_weight {self.keep_weight} must be ≥ 0")
        if self.paraphrase_max < 0:
            raise ValueError(f"paraphrase_max {self.paraphrase_max} must be ≥ 0")
        if self.paraphrase_keys < 0:
            raise ValueError(f"paraphrase_keys {self.paraphrase_keys} must be ≥ 0")
        if self.lookalike_weight < 0 or self.lookalikes < 0:
            raise ValueError(
                f"lookalike_weight {self.lookalike_weight} and lookalikes {self.lookalikes} "
                "must be ≥ 0"
            )
        if self.keep_max is not None and self.keep_max < 0:
            raise ValueError(f"keep_max {self.keep_max} must be ≥ 0 or None")
        if self.max_norm_per_doubling < 0:
            raise ValueError(f"max_norm_per_doubling {self.max_norm_per_doubling} must be ≥ 0")
        if self.max_norm_ref_edits is not None and self.max_norm_ref_edits < 1:
            raise ValueError(f"max_norm_ref_edits {self.max_norm_ref_edits} must be ≥ 1 or None")

    def clamp_for(self, n_edits: int | None) -> float:
        """The clamp ‖δ‖/‖residual‖ of the values for a solve of `n_edits` edits (None: one
        of unknown size, max_norm): max_norm up to max_norm_ref_edits edits, then
        max_norm_per_doubling less per doubling begun (⌈log2(N/ref)⌉: whole steps, so a
        joint version re-optimises stored values only when N crosses a doubling), down to
        max_norm_min (a max_norm below that floor is the clamp at every N)."""
        ref = self.max_norm_ref_edits
        if ref is None or n_edits is None or n_edits <= ref:
            return self.max_norm
        doublings = (-(-n_edits // ref) - 1).bit_length()  # ⌈log2(N/ref)⌉, in integers
        floor = min(self.max_norm_min, self.max_norm)
        return max(floor, self.max_norm - self.max_norm_per_doubling * doublings)

    @property
    def n_slots(self) -> int:
        """Residual targets per fact: one per context and keyed subject token."""
        return len(self.prefixes) * len(self.subject_tokens)


def in_context(context: str, prompt: str) -> str:
    """The edit prompt in one of `ValueOptConfig.prefixes`: a context holding "{prompt}" is
    a frame the prompt is put into (text after it changes where the answer is asked for, not
    the subject's key: the key is read at the subject, before it); any other is a prefix."""
    if PROMPT_SLOT in context:
        return context.replace(PROMPT_SLOT, prompt)
    return context + prompt


def key_positions(batch: EditBatch) -> torch.Tensor:
    """(B,) the first keyed position of each row: the subject's last token, or (no subject
    found) the last prompt token."""
    return batch.keyed_mask.int().argmax(dim=1)


@contextmanager
def _keys_at(
    adapter: ModelAdapter, rows: torch.Tensor, pos: torch.Tensor
) -> Iterator[dict[str, torch.Tensor]]:
    """Record every edited module's input (its key) at (rows, pos): fp32 (B, d_in)."""
    seen: dict[str, torch.Tensor] = {}

    def make(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            seen[name] = args[0][rows, pos].float()

        return hook

    handles = [adapter.module(n).register_forward_pre_hook(make(n)) for n in adapter.names]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def target_nll_per_row(model: Any, batch: EditBatch) -> torch.Tensor:
    """(B,) mean cross-entropy of each row's target tokens, computing the LM head only at
    the predicting positions (the vocabulary projection dominates small models' cost)."""
    hidden = model.base_model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    ).last_hidden_state  # (B, L, H)
    mask = batch.predict_mask  # (B, L)
    logits = model.get_output_embeddings()(hidden[mask])  # (n_tok, V)
    nll = F.cross_entropy(logits.float(), batch.labels[mask], reduction="none")  # (n_tok,)
    row = mask.nonzero()[:, 0]  # (n_tok,)
    sums = torch.zeros(mask.shape[0], device=nll.device).index_add(0, row, nll)
    return sums / mask.sum(1).clamp(min=1)


SolveFn = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ResidualTargets:
    """What each fact asks of the residual stream after the last edited layer, at its
    subject's last token, in each of its variants (the `prefixes`).  Found on the base
    weights, it depends on that fact alone (and on the facts of the same request set that
    name its subject), so it is kept per edit: joint mode re-spreads the targets of every
    live edit from the base weights at each version (`spread_rows`)."""

    z: torch.Tensor  # (n_facts, n_slots, H) fp32: one per context and keyed subject token
    final_loss: torch.Tensor  # (n_facts,) mean target NLL at the last step taken
    steps_taken: torch.Tensor  # (n_facts,) long
    delta_ratio: torch.Tensor  # (n_facts,) ‖δ‖ / ‖residual‖ at the subject token
    clamp: float  # the bound on delta_ratio they were found with (`ValueOptConfig.clamp_for`)


def _check_modules(adapter: ModelAdapter) -> None:
    hidden = int(adapter.model.get_output_embeddings().weight.shape[1])  # type: ignore[operator]
    wrong = [m.name for m in adapter.modules if m.d_out != hidden]
    if wrong:
        raise ValueError(
            f"value optimisation spreads a residual-stream change over the edited modules, "
            f"so each must write the residual stream (output size {hidden}); {wrong} do not"
        )


def residual_targets(
    adapter: ModelAdapter,
    tokenizer: object,
    requests: Sequence[EditRequest],
    cfg: ValueOptConfig,
    max_length: int | None = None,
    progress: bool = False,
    n_edits: int | None = None,
) -> ResidualTargets:
    """Step 1: per fact, the residual after the last edited layer, at the subject's last
    token, that makes the model continue with the target (`cfg.steps` Adam steps at most,
    from the weights the model holds now).  Independent per subject group (one δ for the
    facts naming one subject, `cfg.group_subjects`), else per fact; results are in request
    order and do not depend on `cfg.batch_facts`.  `n_edits`: how many edits the solve
    these targets go into holds (the clamp, `cfg.clamp_for`); default len(requests)."""
    _check_modules(adapter)
    clamp = cfg.clamp_for(len(requests) if n_edits is None else n_edits)
    if clamp != cfg.max_norm:
        cfg = replace(cfg, max_norm=clamp, max_norm_ref_edits=None)
    groups = subject_groups(requests) if cfg.group_subjects else [[i] for i in range(len(requests))]
    zs, losses, steps, ratios = [], [], [], []
    parts = list(_group_chunks(groups, cfg.batch_facts))
    for part in bar(parts, desc="optimising edit values", progress=progress):
        idx = [i for g in part for i in g]
        chunk = _encode_chunk(adapter, tokenizer, [requests[i] for i in idx], cfg, max_length)
        group = torch.tensor(
            [k for k, g in enumerate(part) for _ in g], device=chunk.rows.device
        )  # (F_c,) group of each fact, in `idx` order
        z, loss, n_steps, ratio = _residual_targets(adapter, chunk, cfg, group)
        zs.append(z.view(chunk.n_facts, cfg.n_slots, -1))
        losses.append(loss)
        steps.append(n_steps)
        ratios.append(ratio)
    order = torch.tensor([i for part in parts for g in part for i in g])
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))  # request i sits at position back[i]
    found = ResidualTargets(
        torch.cat(zs)[back],
        torch.cat(losses)[back],
        torch.cat(steps)[back],
        torch.cat(ratios)[back],
        cfg.max_norm,
    )
    missed = int((found.final_loss > cfg.stop_loss).sum())
    if missed:
        log.warning(
            "%d of %d edits' values did not reach the target NLL %.3g (max %.3g): they may "
            "not land; raise value_opt.steps or max_norm",
            missed,
            len(requests),
            cfg.stop_loss,
            float(found.final_loss.max()),
        )
    return found


def subject_groups(requests: Sequence[EditRequest]) -> list[list[int]]:
    """Indices of the requests that name the same subject, in order of first appearance;
    a request without a subject is a group of its own."""
    groups: dict[object, list[int]] = {}
    for i, r in enumerate(requests):
        key = r.subject.strip() if r.subject and r.subject.strip() else ("no subject", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _group_chunks(groups: list[list[int]], size: int) -> Iterator[list[list[int]]]:
    """Whole groups, packed in order into chunks of at most `size` facts (a larger group is
    a chunk of its own): a group's facts must be optimised together."""
    part: list[list[int]] = []
    n = 0
    for g in groups:
        if part and n + len(g) > size:
            yield part
            part, n = [], 0
        part.append(g)
        n += len(g)
    if part:
        yield part


def spread_rows(
    adapter: ModelAdapter,
    tokenizer: object,
    requests: Sequence[EditRequest],
    z: torch.Tensor,
    cfg: ValueOptConfig,
    solve: SolveFn,
    max_length: int | None = None,
    progress: bool = False,
    seen: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Step 2: (keys, values) per module, (R, d_in) and (R, d_out), and the fact (R,) each row
    is of — one row per fact and keyed subject token —, from the facts' residual targets
    `z` (F, n_slots, H), spread over the edited layers lowest first from the weights
    the model holds now (MEMIT's schedule): layer j's rows ask for 1/(layers left) of the
    gap between the target residual and the residual with the shifts of the layers below
    already applied.  `solve(name, keys, values) -> shift (d_in, d_out)` is the editor's
    solve for one module, so the rows returned here re-solve to exactly the shifts the
    spread saw.  The rows depend on the whole request set (as MEMIT's do), not on
    `cfg.batch_facts`.  `seen`, when given, is filled with each module's keys before
    they are averaged into rows — every keyed slot in every context and every sent
    paraphrase's (paraphrase_keys > 0), (S, d_in) — from the last spread."""
    _check_modules(adapter)
    if z.shape[:2] != (len(requests), cfg.n_slots):
        raise ValueError(
            f"residual targets of shape {tuple(z.shape)} do not fit {len(requests)} requests "
            f"with {len(cfg.prefixes)} contexts × {len(cfg.subject_tokens)} keyed tokens each"
        )
    starts = range(0, len(requests), cfg.batch_facts)
    chunks = [
        _encode_chunk(adapter, tokenizer, requests[s : s + cfg.batch_facts], cfg, max_length)
        for s in starts
    ]
    device = next(adapter.model.parameters()).device
    targets = [z[s : s + cfg.batch_facts].flatten(0, 1).to(device) for s in starts]  # (B·P, H)
    shares = layer_shares(len(adapter.names), cfg.upper_tilt)
    para = cfg.paraphrase_keys
    keys, values, shifts = _spread(adapter, chunks, targets, solve, progress, shares, para, seen)
    if cfg.refine > 0:
        reached = [_residual_at_top(adapter, c, shifts) for c in chunks]
        targets = [t + cfg.refine * (t - r) for t, r in zip(targets, reached, strict=True)]
        keys, values, _ = _spread(adapter, chunks, targets, solve, progress, shares, para, seen)
    fact = torch.cat(
        [
            s + torch.arange(c.n_facts * c.n_tokens) // c.n_tokens
            for s, c in zip(starts, chunks, strict=True)
        ]
    )  # (F·P,) the fact of each slot
    keyed = torch.cat([c.fact_keyed.cpu() for c in chunks])
    return keys, values, fact[keyed].to(device)


def _residual_at_top(
    adapter: ModelAdapter, chunk: _Chunk, shifts: dict[str, torch.Tensor]
) -> torch.Tensor:
    """(B, H) the residual after the last edited layer at the chunk's keyed positions, with
    `shifts` applied."""
    block = adapter.blocks()[adapter.layers[-1]]
    return _run_keyed(adapter, block, chunk.batch, chunk.rows, chunk.pos, shifts)[0]


def _check_upper_tilt(upper_tilt: float) -> None:
    if upper_tilt <= -1:
        raise ValueError(f"upper_tilt {upper_tilt} would give a layer no weight (needs > −1)")


def layer_shares(n_layers: int, upper_tilt: float) -> list[float]:
    """The fraction of the gap left that edited layer j (lowest first) is asked to close:
    w_j / Σ_{i ≥ j} w_i with w_j = 1 + upper_tilt·j/(n_layers − 1); all 1/(layers left)
    when upper_tilt is 0, and always 1 for the top layer (it closes what is left)."""
    _check_upper_tilt(upper_tilt)
    w = [1 + upper_tilt * j / max(n_layers - 1, 1) for j in range(n_layers)]
    return [w[j] / sum(w[j:]) for j in range(n_layers)]


class _Reached(Exception):
    """Raised by a recording hook to end a forward pass whose upper layers are not needed."""


def _run_to_block(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Forward a batch until `_below`'s recording hook has what it needs
    (the layers above the last edited one and the LM head are most of a forward pass)."""
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Reached:
        return
    raise RuntimeError("the forward pass never reached the recording block")


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@dataclass
class _Below:
    """A batch's residual stream after the last edited block, at every position, on the
    weights the model holds now: what the δs added there leave alone.  Value optimisation
    runs the blocks up to it once, here, instead of at each of its steps
    (`_from_below`)."""

    h: torch.Tensor  # (B, T, H)
    tail: tuple  # the block's other outputs, when it returns a tuple (else empty)
    is_tuple: bool


def _below(
    model: Any, block: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> _Below:
    """Run a batch up to `block` (the caller's autocast and weight shifts apply); the
    forward pass ends there."""
    seen: dict[str, Any] = {}

    def hook(_m: nn.Module, _args: tuple, output: Any) -> Any:
        seen["out"] = output
        raise _Reached

    handle = block.register_forward_hook(hook)
    try:
        with torch.no_grad():
            _run_to_block(model, input_ids, attention_mask)
    finally:
        handle.remove()
    out = seen["out"]
    is_tuple = isinstance(out, tuple)
    return _Below(_block_output(out).detach(), tuple(out[1:]) if is_tuple else (), is_tuple)


@contextmanager
def _from_below(
    lower: Sequence[nn.Module],
    below: _Below,
    sel: torch.Tensor,
    rows: torch.Tensor,
    pos: torch.Tensor,
    add: torch.Tensor,
) -> Iterator[None]:
    """For a forward pass of rows `sel` of `below`'s batch: the blocks `lower` (the model's
    blocks up to the last edited one) are not run — each hands its input on, and the last
    hands on `below.h[sel]` with `add` (n, H) added at (rows, pos) — and grad mode is
    switched on from there up (the caller's no_grad restores it), so the graph starts at
    the δs."""

    def wrap(h: torch.Tensor) -> Any:
        return (h, *below.tail) if below.is_tuple else h

    def passing(*args: Any, **kwargs: Any) -> Any:
        return wrap(args[0] if args else kwargs["hidden_states"])

    def top(*_args: Any, **_kwargs: Any) -> Any:
        torch.set_grad_enabled(True)
        h = below.h[sel]
        return wrap(h.index_put((rows, pos), add.to(h.dtype), accumulate=True))

    saved = [b.__dict__.get("forward") for b in lower]
    for b in lower[:-1]:
        b.forward = passing
    lower[-1].forward = top
    try:
        yield
    finally:
        for b, f in zip(lower, saved, strict=True):
            if f is None:
                del b.forward
            else:
                b.forward = f


@dataclass
class _Chunk:
    """A chunk's facts in every context, and where each is keyed: slot (b, s) is variant
    b's keyed subject token s; the slot tensors are (B·P,), b-major."""

    batch: EditBatch  # the facts' variants, n_var consecutive rows per fact (B rows)
    rows: torch.Tensor  # (B·P,) the variant row of each slot
    pos: torch.Tensor  # (B·P,) the keyed position of each slot
    keyed: torch.Tensor  # (B·P,) bool: the slot is its fact's in every context (else no δ, no row)
    n_facts: int
    n_tokens: int  # P, keyed subject tokens per fact
    # the drift penalties' prompts: essence prompts (essence_weight > 0), the requests'
    # keep prompts (keep_weight > 0) and look-alike prompts (lookalike_weight > 0), each
    # set with its weight
    drift: tuple[_Drift, ...] = ()
    also: _Also | None = None  # the requests' paraphrases (paraphrase_max > 0)

    @property
    def fact_keyed(self) -> torch.Tensor:
        """(F·P,) bool: the fact's slot s holds a δ and gives rows."""
        n_var = self.batch.input_ids.shape[0] // self.n_facts
        return self.keyed.view(self.n_facts, n_var, self.n_tokens)[:, 0].reshape(-1)

    def per_fact(
        self, x: torch.Tensor, also_x: torch.Tensor | None = None, weight: float = 0.0
    ) -> torch.Tensor:
        """(F·P, D) from (B·P, D) slot rows: the mean over the fact's contexts — and, given
        `also_x` (A·P, D) at the paraphrases' slots, over its paraphrases too, each weighing
        `weight` × a context."""
        n_var = self.batch.input_ids.shape[0] // self.n_facts
        x = x.view(self.n_facts, n_var, self.n_tokens, -1)
        if also_x is None or self.also is None:
            return x.mean(1).flatten(0, 1)
        also = self.also
        total = x.sum(1).index_add(
            0, also.fact, weight * also_x.view(-1, self.n_tokens, x.shape[-1])
        )
        count = n_var + weight * also.count.to(total.dtype)  # (F,)
        return (total / count.view(-1, 1, 1)).flatten(0, 1)


@dataclass
class _Drift:
    """Prompts whose next token the δs must leave alone (E prompts, right-padded: essence
    prompts, the requests' keep prompts or look-alike prompts), their keyed slots (E·P,)
    like the chunk's, the penalty's weight, and the unedited model's next-token
    log-probabilities after each (set by `_adam_on_residual`)."""

    weight: float  # × the mean KL over a group's prompts, added to the group's loss
    input_ids: torch.Tensor  # (E, T)
    attention_mask: torch.Tensor  # (E, T)
    last: torch.Tensor  # (E,) position of each prompt's last token
    pos: torch.Tensor  # (E·P,) keyed position of each slot
    keyed: torch.Tensor  # (E·P,) bool
    fact: torch.Tensor  # (E,) the chunk fact each prompt belongs to
    base: torch.Tensor | None = None  # (E, V) unedited log-probabilities at `last`


@dataclass
class _Also:
    """A chunk's requests' paraphrases with their targets (A rows, `paraphrase_max` at most
    per request, those naming its subject), keyed like the chunk's slots: (A·P,)."""

    batch: EditBatch
    pos: torch.Tensor  # (A·P,) keyed position of each slot
    keyed: torch.Tensor  # (A·P,) bool
    fact: torch.Tensor  # (A,) the chunk fact each paraphrase belongs to
    count: torch.Tensor  # (F,) paraphrases per chunk fact

    @property
    def rows(self) -> torch.Tensor:
        """(A·P,) the paraphrase row of each slot."""
        n = self.batch.input_ids.shape[0]
        return torch.arange(n, device=self.pos.device).repeat_interleave(self.pos.shape[0] // n)


def _encode_also(
    tokenizer: Any,
    requests: Sequence[EditRequest],
    cfg: ValueOptConfig,
    keyed: torch.Tensor,
    max_length: int | None,
) -> _Also | None:
    """Each request's first `cfg.paraphrase_max` paraphrases that contain its subject, with
    its target, keyed at the subject tokens its own δs are (`keyed`: the chunk's
    `fact_keyed`); None when there are none."""
    device = keyed.device
    reqs, fact = [], []
    for q, f in paraphrase_edits(requests, cfg.paraphrase_max):
        subject = (q.subject or "").strip()
        if subject and all(
            subject_token_index(tokenizer, q.prompt, subject, w) is not None
            for w in cfg.subject_tokens
        ):
            reqs.append(EditRequest(q.prompt, q.target, subject))
            fact.append(f)
    if not reqs:
        return None
    # one encoding per keyed subject token (only its key mask differs): its positions
    batches = [encode_edits(tokenizer, reqs, max_length, "subject", w) for w in cfg.subject_tokens]
    pos = [key_positions(b) for b in batches]
    batch = batches[0].to(device)
    facts = torch.tensor(fact, device=device)
    n_tok = len(cfg.subject_tokens)
    return _Also(
        batch,
        torch.stack(pos, dim=1).reshape(-1).to(device),
        keyed.view(len(requests), n_tok)[facts].reshape(-1),
        facts,
        torch.bincount(facts, minlength=len(requests)),
    )


# a drift prompt and the name in it whose tokens the δs are added at
_Named = tuple[str, str]


def _essence_texts(requests: Sequence[EditRequest], cfg: ValueOptConfig) -> list[list[_Named]]:
    """Per request, `cfg.essence_prompts` filled with its subject ([] without one)."""
    out: list[list[_Named]] = []
    for r in requests:
        s = (r.subject or "").strip()
        out.append([(t.replace("{subject}", s), s) for t in cfg.essence_prompts] if s else [])
    return out


def _lookalike_texts(requests: Sequence[EditRequest], cfg: ValueOptConfig) -> list[list[_Named]]:
    """Per request, `cfg.lookalikes` prompts asking its question of a look-alike subject
    (another first word, the subject's last word: `anchors.anchor_pairs`), none that names
    a subject edited in the chunk; [] for a subject of one word or none."""
    edited = {(r.subject or "").strip().casefold() for r in requests}
    out: list[list[_Named]] = []
    for r in requests:
        s = (r.subject or "").strip()
        pairs = (
            anchor_pairs(r.prompt, s, cfg.lookalikes, kind="same_last_word")
            if len(s.split()) > 1
            else []
        )
        out.append([(p, name) for p, name in pairs if name.casefold() not in edited])
    return out


def _keep_texts(requests: Sequence[EditRequest], cfg: ValueOptConfig) -> list[list[_Named]]:
    """Per request, its first `cfg.keep_max` keep prompts, less any that a request of the
    chunk naming the same subject asks to change (its prompt, `normalise_prompt`): the
    group's δ must change that one, so it cannot also be kept.  (A keep prompt that asks
    the same as another edit of the subject in other words is the sender's contradiction.)"""
    edited: dict[str, set[str]] = {}
    for r in requests:
        if r.subject and r.subject.strip():
            edited.setdefault(r.subject.strip(), set()).add(normalise_prompt(r.prompt))
    out: list[list[_Named]] = []
    for r in requests:
        subject = (r.subject or "").strip()
        own = edited.get(subject, set())
        keep = [(k, subject) for k in r.keep[: cfg.keep_max] if normalise_prompt(k) not in own]
        out.append(keep if subject else [])
    return out


def _encode_drift(
    tokenizer: Any,
    texts: list[list[_Named]],
    cfg: ValueOptConfig,
    keyed: torch.Tensor,
    weight: float,
) -> _Drift | None:
    """`texts[f]` (chunk request f's drift prompts, each with the name in it: the subject, or
    a look-alike) keyed at that name's tokens as the request's own δs are at its subject's
    (`keyed`: (F·P,) the chunk's `fact_keyed`); a prompt the name is not found in is left
    out; None when none is left."""
    device = keyed.device
    ids, pos, fact = [], [], []
    for f, named in enumerate(texts):
        for text, name in named:
            at = [subject_token_index(tokenizer, text, name, w) for w in cfg.subject_tokens]
            if any(a is None for a in at):
                continue
            ids.append(list(tokenizer(text, add_special_tokens=True)["input_ids"]))
            pos.append(at)
            fact.append(f)
    if not ids:
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for e, x in enumerate(ids):
        input_ids[e, : len(x)] = torch.tensor(x)
        mask[e, : len(x)] = 1
    facts = torch.tensor(fact, device=device)
    n_tok = len(cfg.subject_tokens)
    slot = keyed.view(len(texts), n_tok)[facts]  # (E, P)
    return _Drift(
        weight,
        input_ids.to(device),
        mask.to(device),
        torch.tensor([len(x) - 1 for x in ids], device=device),
        torch.tensor(pos, device=device).reshape(-1),
        slot.reshape(-1),
        facts,
    )


def _drift_logprobs(model: Any, ess: _Drift, sel: torch.Tensor) -> torch.Tensor:
    """(len(sel), V) fp32 next-token log-probabilities after drift prompts `sel`."""
    hidden = model.base_model(
        input_ids=ess.input_ids[sel], attention_mask=ess.attention_mask[sel]
    ).last_hidden_state  # (E_s, T, H)
    at = hidden[torch.arange(sel.shape[0], device=sel.device), ess.last[sel]]  # (E_s, H)
    return F.log_softmax(model.get_output_embeddings()(at).float(), dim=-1)


def _encode_chunk(
    adapter: ModelAdapter,
    tokenizer: object,
    requests: Sequence[EditRequest],
    cfg: ValueOptConfig,
    max_length: int | None,
) -> _Chunk:
    device = next(adapter.model.parameters()).device
    variants = [
        EditRequest(in_context(p, r.prompt), r.target, r.subject)
        for r in requests
        for p in cfg.prefixes
    ]
    pos = []
    for which in cfg.subject_tokens:
        batch = encode_edits(
            tokenizer,  # type: ignore[arg-type]
            variants,
            max_length,
            "subject",
            which,
        ).to(device)
        pos.append(key_positions(batch))
    at = torch.stack(pos, dim=1)  # (B, P)
    # a slot is keyed unless an earlier slot of its row sits at the same position (a subject
    # shorter than the tokens asked for), in every context of its fact
    fresh = torch.ones_like(at, dtype=torch.bool)
    for j in range(1, at.shape[1]):
        fresh[:, j] = (at[:, j : j + 1] != at[:, :j]).all(1)
    n_var, n_tok = len(cfg.prefixes), at.shape[1]
    fresh = fresh.view(len(requests), n_var, n_tok).all(1, keepdim=True).expand(-1, n_var, -1)
    rows = torch.arange(len(variants), device=device).repeat_interleave(n_tok)
    chunk = _Chunk(batch, rows, at.reshape(-1), fresh.reshape(-1), len(requests), n_tok)
    drift = [
        _encode_drift(tokenizer, texts(requests, cfg), cfg, chunk.fact_keyed, weight)
        for texts, weight in (
            (_essence_texts, cfg.essence_weight),
            (_keep_texts, cfg.keep_weight),
            (_lookalike_texts, cfg.lookalike_weight),
        )
        if weight > 0
    ]
    chunk.drift = tuple(d for d in drift if d is not None)
    if cfg.paraphrase_max > 0:
        chunk.also = _encode_also(tokenizer, requests, cfg, chunk.fact_keyed, max_length)
    return chunk


def _residual_targets(
    adapter: ModelAdapter, chunk: _Chunk, cfg: ValueOptConfig, group: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_target (B·P, H), final NLL (F,), steps taken (F,), ‖δ‖/‖residual‖ (F,)); the
    facts of one `group` (F,) share their δs (one per keyed subject token)."""
    model = adapter.model
    n_facts, n_tok = chunk.n_facts, chunk.n_tokens
    n_var = len(cfg.prefixes)
    n_groups = int(group.max()) + 1
    block = adapter.blocks()[adapter.layers[-1]]
    below = _below(model, block, chunk.batch.input_ids, chunk.batch.attention_mask)
    z_base = below.h[chunk.rows, chunk.pos].float()  # (B·P, H)
    # each group's own scale (RMS element of its residuals), so no group depends on another
    size = torch.bincount(group, minlength=n_groups).float()  # (G,) facts per group
    ms = z_base.view(n_facts, n_var * n_tok, -1).pow(2).mean((1, 2))  # (F,)
    scale = (torch.zeros(n_groups, device=group.device).index_add(0, group, ms) / size).sqrt()
    lower = list(adapter.blocks())[: adapter.layers[-1] + 1]
    delta, final, steps = _adam_on_residual(
        model, lower, chunk, z_base.shape[1], scale.clamp(min=1e-6), group, size, cfg
    )  # (G, P, H), (F,), (G,)
    z_norm = z_base.view(n_facts, n_var * n_tok, -1).norm(dim=2).mean(1)  # (F,)
    ratio = delta[group].flatten(1).norm(dim=1) / z_norm.clamp(min=1e-6)
    fact = chunk.rows // n_var  # (B·P,) fact of each slot
    slot = torch.arange(n_tok, device=fact.device).repeat(chunk.batch.input_ids.shape[0])
    add = delta[group[fact], slot] * chunk.keyed.unsqueeze(1)  # (B·P, H)
    return z_base + add, final, steps[group], ratio


def _spread(
    adapter: ModelAdapter,
    chunks: Sequence[_Chunk],
    targets: Sequence[torch.Tensor],
    solve: SolveFn,
    progress: bool,
    shares: Sequence[float],
    para_weight: float = 0.0,
    seen: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(keys, values, shifts) per module: (R, d_in), (R, d_out), R = the keyed slots of the
    facts over all chunks (`_Chunk.fact_keyed`), and the solved shifts;
    `targets[i]` (B_i·P, H): chunk i's residual after the last edited layer, as it should be;
    layer j asks for `shares[j]` of the gap left (`layer_shares`).  `para_weight` > 0: each
    chunk's paraphrases (`_Chunk.also`) join every fact's mean key and gap with that weight
    (`ValueOptConfig.paraphrase_keys`); a paraphrase's target is its residual at the
    weights held now plus its fact's δ (the contexts' gap before any shift)."""
    block = adapter.blocks()[adapter.layers[-1]]
    names = adapter.names
    shifts: dict[str, torch.Tensor] = {}
    keys: dict[str, torch.Tensor] = {}
    values: dict[str, torch.Tensor] = {}
    para_targets: list[torch.Tensor | None] = [None] * len(chunks)
    for j, name in enumerate(bar(names, desc="spreading over layers", progress=progress)):
        gaps, ks, raw = [], [], []
        for i, (c, z_target) in enumerate(zip(chunks, targets, strict=True)):
            z_now, k_now = _run_keyed(adapter, block, c.batch, c.rows, c.pos, shifts)
            also = c.also if para_weight > 0 else None
            a_gap = a_key = None
            if also is not None:
                a_z, a_keys = _run_keyed(adapter, block, also.batch, also.rows, also.pos, shifts)
                a_key = a_keys[name]
                a_target = para_targets[i]
                if a_target is None:  # first layer, no shift yet: the δs themselves
                    delta = c.per_fact(z_target - z_now).view(c.n_facts, c.n_tokens, -1)
                    keep = also.keyed.unsqueeze(1)
                    a_target = para_targets[i] = a_z + delta[also.fact].flatten(0, 1) * keep
                a_gap = a_target - a_z
            keyed = c.fact_keyed
            gaps.append(c.per_fact(z_target - z_now, a_gap, para_weight)[keyed])  # (R_c, H)
            ks.append(c.per_fact(k_now[name], a_key, para_weight)[keyed])  # (R_c, d_in)
            raw.append(k_now[name][c.keyed])
            if a_key is not None and also is not None:
                raw.append(a_key[also.keyed])
        keys[name] = torch.cat(ks)
        if seen is not None:
            seen[name] = torch.cat(raw)
        values[name] = torch.cat(gaps) * shares[j]
        shifts[name] = solve(name, keys[name], values[name])
    return keys, values, shifts


def _run_keyed(
    adapter: ModelAdapter,
    block: nn.Module,
    batch: EditBatch,
    rows: torch.Tensor,
    pos: torch.Tensor,
    shifts: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """With `shifts` applied: the residual after `block` (B, H) and every edited module's
    input (its key, (B, d_in)) at (rows, pos)."""
    with torch.no_grad(), shifted(adapter, shifts), _keys_at(adapter, rows, pos) as io:
        below = _below(adapter.model, block, batch.input_ids, batch.attention_mask)
    return below.h[rows, pos].float(), io


def _adam_on_residual(
    model: Any,
    lower: Sequence[nn.Module],
    chunk: _Chunk,
    hidden: int,
    scale: torch.Tensor,
    group: torch.Tensor,
    size: torch.Tensor,
    cfg: ValueOptConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(δ (G, P, H), final mean target NLL (F,), steps taken (G,)): one δ = scale·θ per group
    of facts (`group` (F,), `scale` and `size` (G,)) and keyed subject token, added at the
    chunk's keyed slots, by per-group Adam on the group's mean NLL + weight_decay·mean(θ²);
    a group stops once that NLL is below stop_loss.

    Each step runs only the variants of the facts whose group is still moving, and only
    the blocks above `lower` (the model's blocks up to the last edited one, the block δ is
    added after): their output is found once, before the first step (`_from_below`)."""
    batch, n_tok = chunk.batch, chunk.n_tokens
    device = batch.input_ids.device
    n_facts, n_groups = group.shape[0], scale.shape[0]
    n_var = batch.input_ids.shape[0] // n_facts
    scale = scale.view(-1, 1, 1)  # (G, 1, 1)
    limit = cfg.max_norm * hidden**0.5  # ‖θ‖ bound per token: ‖δ‖ in RMS-element units
    pos = chunk.pos.view(-1, n_tok)  # (B, P)
    keyed = chunk.keyed.view(-1, n_tok, 1)  # (B, P, 1)
    theta = torch.zeros(n_groups, n_tok, hidden, device=device)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    active = torch.ones(n_groups, dtype=torch.bool, device=device)
    steps_taken = torch.zeros(n_groups, dtype=torch.long, device=device)
    final = torch.zeros(n_facts, device=device)
    variant_rows = torch.arange(n_facts * n_var, device=device).view(n_facts, n_var)
    local = torch.full((n_groups,), -1, dtype=torch.long, device=device)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    use_bf16 = cfg.bf16 and bf16_is_fast(device)
    for d in chunk.drift:  # the unedited model's next token after each drift prompt
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            d.base = _drift_logprobs(model, d, torch.arange(d.fact.shape[0], device=device))
    with torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
        below = _below(model, lower[-1], batch.input_ids, batch.attention_mask)
        also_below = (
            None
            if chunk.also is None
            else _below(
                model, lower[-1], chunk.also.batch.input_ids, chunk.also.batch.attention_mask
            )
        )
        drift_below = [_below(model, lower[-1], d.input_ids, d.attention_mask) for d in chunk.drift]
    for step in range(cfg.steps + 1):
        gidx = active.nonzero()[:, 0]  # (A,) groups still moving
        local[gidx] = torch.arange(gidx.shape[0], device=device)
        fidx = active[group].nonzero()[:, 0]  # (Fa,) their facts
        owner = local[group[fidx]]  # (Fa,) each such fact's row in gidx
        sel = variant_rows[fidx].reshape(-1)  # (Fa·n_var,) their variants
        sub = EditBatch(
            batch.input_ids[sel],
            batch.attention_mask[sel],
            batch.labels[sel],
            [batch.target_lengths[i] for i in sel.tolist()],
        )
        th = theta[gidx].detach().requires_grad_(True)  # (A, P, H)
        # (Fa·n_var·P, H), built before no_grad below: its graph leads back to θ
        add = ((scale[gidx] * th)[owner].repeat_interleave(n_var, dim=0) * keyed[sel]).flatten(0, 1)
        rows = torch.arange(sel.shape[0], device=device).repeat_interleave(n_tok)
        with (
            torch.no_grad(),
            torch.autocast(device.type, torch.bfloat16, enabled=use_bf16),
            _from_below(lower, below, sel, rows, pos[sel].reshape(-1), add),
        ):
            nll = target_nll_per_row(model, sub).view(-1, n_var).mean(1)  # (Fa,)
        if chunk.also is not None:
            assert also_below is not None
            nll = _with_paraphrases(
                model,
                lower,
                (chunk.also, also_below),
                nll,
                fidx,
                th,
                scale[gidx],
                local,
                group,
                n_var,
                use_bf16,
            )
        with torch.enable_grad():
            group_nll = torch.zeros(gidx.shape[0], device=device).index_add(0, owner, nll)
            group_nll = group_nll / size[gidx]  # (A,)
            loss = (group_nll + cfg.weight_decay * th.pow(2).mean((1, 2))).sum()
        for d, d_below in zip(chunk.drift, drift_below, strict=True):
            loss = loss + d.weight * _drift_kl(
                model, lower, (d, d_below), th, scale[gidx], local, group, active, use_bf16
            )
        final[fidx] = nll.detach()
        moving = group_nll.detach() > cfg.stop_loss  # (A,)
        active[gidx] = moving
        if step == cfg.steps or not bool(moving.any()):
            break
        (grad,) = torch.autograd.grad(loss, th)
        j, g = gidx[moving], grad[moving]
        m[j] = beta1 * m[j] + (1 - beta1) * g
        v[j] = beta2 * v[j] + (1 - beta2) * g.pow(2)
        t = (steps_taken[j] + 1).view(-1, 1, 1).float()
        new = theta[j] - cfg.lr * (m[j] / (1 - beta1**t)) / ((v[j] / (1 - beta2**t)).sqrt() + eps)
        theta[j] = new * (limit / new.norm(dim=2, keepdim=True).clamp(min=limit))
        steps_taken[j] += 1
    return (scale * theta).detach(), final, steps_taken


def _with_paraphrases(
    model: Any,
    lower: Sequence[nn.Module],
    paraphrases: tuple[_Also, _Below],
    nll: torch.Tensor,
    fidx: torch.Tensor,
    th: torch.Tensor,
    scale: torch.Tensor,
    local: torch.Tensor,
    group: torch.Tensor,
    n_var: int,
    use_bf16: bool,
) -> torch.Tensor:
    """(Fa,) each moving fact's (`fidx`) mean target NLL over its `n_var` contexts (`nll`,
    their mean) and its paraphrases, with the δs (scale·θ, `th` (A, P, H)) in place."""
    also, below = paraphrases
    n_facts, n_tok = also.count.shape[0], th.shape[1]
    moving = torch.zeros(n_facts, dtype=torch.bool, device=fidx.device)
    moving[fidx] = True
    asel = moving[also.fact].nonzero()[:, 0]  # (A_a,) paraphrases of moving facts
    if not asel.shape[0]:
        return nll
    owner = local[group[also.fact[asel]]]  # (A_a,) row of each paraphrase's group in `th`
    add = ((scale * th)[owner] * also.keyed.view(-1, n_tok, 1)[asel]).flatten(0, 1)
    rows = torch.arange(asel.shape[0], device=asel.device).repeat_interleave(n_tok)
    b = also.batch
    sub = EditBatch(
        b.input_ids[asel],
        b.attention_mask[asel],
        b.labels[asel],
        [b.target_lengths[i] for i in asel.tolist()],
    )
    with (
        torch.no_grad(),
        torch.autocast(asel.device.type, torch.bfloat16, enabled=use_bf16),
        _from_below(lower, below, asel, rows, also.pos.view(-1, n_tok)[asel].reshape(-1), add),
    ):
        para = target_nll_per_row(model, sub)  # (A_a,)
        total = torch.zeros(n_facts, device=nll.device).index_add(0, fidx, nll * n_var)
        total = total.index_add(0, also.fact[asel], para.float())
        return (total / (n_var + also.count).float())[fidx]


def _drift_kl(
    model: Any,
    lower: Sequence[nn.Module],
    drift: tuple[_Drift, _Below],
    th: torch.Tensor,
    scale: torch.Tensor,
    local: torch.Tensor,
    group: torch.Tensor,
    active: torch.Tensor,
    use_bf16: bool,
) -> torch.Tensor:
    """Σ over the moving groups of the mean KL(unedited ‖ edited) of the next token after
    their facts' drift prompts, with their δs (scale·θ, `th` (A, P, H)) in place."""
    ess, below = drift
    esel = active[group[ess.fact]].nonzero()[:, 0]  # (E_a,) prompts of moving groups
    if not esel.shape[0]:
        return th.sum() * 0.0
    n_tok = th.shape[1]
    owner = local[group[ess.fact[esel]]]  # (E_a,) row of each prompt's group in `th`
    keyed = ess.keyed.view(-1, n_tok, 1)[esel]  # (E_a, P, 1)
    add = ((scale * th)[owner] * keyed).flatten(0, 1)  # (E_a·P, H), built outside no_grad
    rows = torch.arange(esel.shape[0], device=esel.device).repeat_interleave(n_tok)
    pos = ess.pos.view(-1, n_tok)[esel].reshape(-1)
    assert ess.base is not None
    with (
        torch.no_grad(),
        torch.autocast(esel.device.type, torch.bfloat16, enabled=use_bf16),
        _from_below(lower, below, esel, rows, pos, add),
    ):
        now = _drift_logprobs(model, ess, esel)  # (E_a, V)
        base = ess.base[esel]
        kl = (base.exp() * (base - now)).sum(-1)  # (E_a,)
        per_group = torch.zeros(th.shape[0], device=th.device).index_add(0, owner, kl)
        count = torch.zeros(th.shape[0], device=th.device).index_add(0, owner, torch.ones_like(kl))
        return (per_group / count.clamp(min=1.0)).sum()
