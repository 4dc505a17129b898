"""MalmenEditor: fact corrections in, a weight delta out — without touching the model.

    rows  = compute_rows(requests)   cache pass (keys u, value-gradients g) + hyper-network
    S*    = solve(rows)              per-module ridge least squares with that layer's λ
    delta = compute_delta(requests)  both; the model is bit-identical afterwards

Writing the delta into the weights is `editor_core.apply`'s job and nobody else's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as fields_of
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

import torch
import torch.nn.functional as F

from editor_core.adapters import ModelAdapter
from editor_core.anchors import AnchorNames, anchor_requests
from editor_core.checkpoint import CheckpointError, load_editor_state
from editor_core.encoding import (
    EditRequest,
    KeyMask,
    KeyPosition,
    encode_edits,
    paraphrase_edits,
)
from editor_core.gate import GateMode, ScopeGate
from editor_core.hooks import cache_keys_and_outputs, grad_from, iter_keys
from editor_core.hypernet import HyperConfig, HyperNetBank
from editor_core.optimize import (
    ResidualTargets,
    ValueOptConfig,
    residual_targets,
    spread_rows,
    subject_groups,
)
from editor_core.preserve import KeyPrior
from editor_core.protect import DEFAULT_MARGIN as PROTECT_MARGIN
from editor_core.protect import DEFAULT_ROUNDS as PROTECT_ROUNDS
from editor_core.protect import DEFAULT_WEIGHT as PROTECT_WEIGHT
from editor_core.protect import ProtectedSet, held_gram, protected_set
from editor_core.solve import ridge_solve
from editor_core.subjects import with_subjects

ValueMode = Literal["hypernet", "optimise"]

if TYPE_CHECKING:
    from editor_core.data.formats import LocalityPrompt
    from editor_core.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditorConfig:
    hyper: HyperConfig = field(default_factory=HyperConfig)
    lm_batch_size: int = 32  # facts per cache-pass mini-batch
    hyper_chunk: int = 1024  # rows per hyper-network chunk
    eta_scale: float = 1.0  # edit-time multiplier of every η (trades ES for LS)
    lambda_override: float | None = None  # edit-time λ for every module
    solve_dtype: Literal["float32", "float64"] = "float32"
    max_length: int | None = None  # tokens per prompt + target
    # Weight μ of the preservation prior μ·E[k kᵀ] in the solve (preserve.py); 0 = plain
    # MALMEN ridge.  Needs the editor's `key_prior` (saved with the checkpoint).
    preserve: float = 0.0
    # μ grows with the number N of facts in one solve beyond this many: μ·max(1, N / this).
    # The edit rows' Gram KᵀK grows with N while μ·E[kkᵀ] does not; scaling μ with N keeps
    # their balance (validation, docs/val_optimise.md, seventh session).  None: μ fixed.
    preserve_ref_edits: int | None = None
    # The top `hold_rank` eigen-directions of the prior's E[k kᵀ] are held: the solve adds
    # hold_weight·U_r U_rᵀ (U_r: those directions), a weight far above every other term, so
    # each shift lies (to < 1e-5 of its norm) in the directions ordinary text uses least —
    # AlphaEdit's null-space projection (Fang et al., ICLR 2025) as a limit of the prior,
    # which joint mode's sums and every solve path take unchanged.  0 = off (measured and
    # not adopted: docs/val_optimise.md, seventeenth session).  Needs `key_prior` and a
    # float64 solve; acts with `preserve` 0 too (then only λ weighs the other directions,
    # as in AlphaEdit).
    hold_rank: int = 0
    hold_weight: float = 1e9
    # Subject anchors (anchors.py): per edit that names its subject, this many prompts with
    # the subject replaced by another name join the solve as zero-value rows of weight ν.
    anchors: int = 0
    anchor_weight: float = 1.0
    # How an anchor's name is made (anchors.AnchorNames): "other" (a whole other name) or
    # "same_last_word" (another first word + the subject's last word: the anchor's key sits
    # at the edit's own keyed token when key_position is "subject").
    anchor_names: AnchorNames = "other"
    # Template pins: every prompt token of an edit that names its subject, except the
    # subject's own tokens, joins the solve as a zero-value row of weight pin_weight, owned
    # by the edit — the relation's words ("The capital of", "is") that every neighbour
    # prompt shares word for word are asked not to move, so a subject-keyed edit acts
    # through its subject.  0 = off.
    pin_weight: float = 0.0
    # Where edits are keyed: "predict" (MALMEN: the positions predicting the target) or
    # "subject" (the subject's last token; needs requests that name their subject).
    key_position: KeyPosition = "predict"
    # Where the rows' value differences come from: "hypernet" (MALMEN: the meta-trained
    # hyper-network maps each row's value-gradient to a value difference) or "optimise"
    # (optimize.py: a few Adam steps per fact on the residual at the subject token, spread
    # over the edited layers; needs no hyper-network and no training, costs ~10–25 forward/
    # backward passes per edit batch).  "optimise" keys every fact at its subject's last
    # token and takes λ from `lambda_override` (default 1).
    values: ValueMode = "hypernet"
    value_opt: ValueOptConfig = field(default_factory=ValueOptConfig)
    # Hyper-network editor: each request's first paraphrase_rows paraphrases
    # (EditRequest.paraphrases, sent with the edit) are edited too — their rows (keys and
    # hyper-network value differences at their own predicting positions, for the same
    # target) join the solve, owned by the edit, so joint mode keeps and withdraws them
    # with it.  0: the edit prompt's rows only (MALMEN).  The value-optimising editor uses
    # paraphrases in its values' loss (`value_opt.paraphrase_max`) and averages them into
    # its keys (`value_opt.paraphrase_keys`) instead.
    paraphrase_rows: int = 0
    # Protected prompts (protect.py; act only on an editor given some, `MalmenEditor.protect`):
    # the weight of each held prompt's rows relative to an edit's, and which are held —
    # 0 rounds: all of them in every solve; k > 0: only those a solve would change, found in
    # up to k re-solves.
    protect_weight: float = PROTECT_WEIGHT
    protect_rounds: int = PROTECT_ROUNDS
    # In rounds, a protected prompt is held when a solve changes one of its answer tokens
    # that the unedited model was at least this sure of (nats over its runner-up); 0: any.
    protect_margin: float = PROTECT_MARGIN
    # Scope gate (gate.py): a module's change acts at a token only where the token's key
    # lies within this cosine of a key the edits were solved at, so prompts that never
    # come near an edited subject run as the unedited model.  None: a plain weight update
    # (MALMEN).  A gated change is not a weight matrix: `WeightDelta.gate` carries it and
    # `apply.apply_delta` installs it as forward hooks (the adapter's `Gate`).
    scope_gate: float | None = None
    # how the gate's decisions at the edited layers combine (gate.GateMode)
    scope_gate_mode: GateMode = "each"

    @property
    def keys_on_subject(self) -> bool:
        """Whether edits are read at their subject (values "optimise" or key_position
        "subject"): an edit that names no subject then falls back to its last token."""
        return self.values == "optimise" or self.key_position == "subject"

    def __post_init__(self) -> None:
        # a setting with a fixed set of values (from FACTPATCH_EDITOR_CONFIG, a checkpoint's
        # config.json) is checked here, not where an edit first reads it
        for name, allowed in _choices().items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r}: expected one of {allowed}")
        if self.paraphrase_rows < 0:
            raise ValueError(f"paraphrase_rows {self.paraphrase_rows} must be ≥ 0")
        if self.pin_weight < 0:
            raise ValueError(f"pin_weight {self.pin_weight} must be ≥ 0")
        if self.protect_weight < 0:
            raise ValueError(f"protect_weight {self.protect_weight} must be ≥ 0")
        if self.protect_rounds < 0:
            raise ValueError(f"protect_rounds {self.protect_rounds} must be ≥ 0")
        if self.protect_margin < 0:
            raise ValueError(f"protect_margin {self.protect_margin} must be ≥ 0")
        if self.pin_weight > 0 and not self.keys_on_subject:
            raise ValueError(
                "pin_weight needs a subject-keyed editor (values 'optimise' or key_position "
                "'subject'): this one is keyed where the prompt predicts its target, a token "
                "the pins would hold still"
            )
        if self.scope_gate is not None and not -1.0 <= self.scope_gate <= 1.0:
            raise ValueError(f"scope_gate {self.scope_gate} must be a cosine in [-1, 1]")
        if self.hold_rank < 0:
            raise ValueError(f"hold_rank {self.hold_rank} must be ≥ 0")
        if self.hold_weight <= 0:
            raise ValueError(f"hold_weight {self.hold_weight} must be > 0")
        if self.hold_rank and self.solve_dtype != "float64":
            raise ValueError("hold_rank needs solve_dtype float64 (the held weight is ~1e9)")


@lru_cache(maxsize=1)
def _choices() -> dict[str, tuple[Any, ...]]:
    """EditorConfig's Literal-typed fields and their allowed values."""
    hints = get_type_hints(EditorConfig)
    return {n: get_args(t) for n, t in hints.items() if get_origin(t) is Literal}


def config_fields(fields: dict[str, Any], base: EditorConfig | None = None) -> dict[str, Any]:
    """EditorConfig keyword arguments from JSON-like values: "hyper" and "value_opt" may be
    dicts (a checkpoint's config.json, FACTPATCH_EDITOR_CONFIG), read as partial updates of
    `base`'s (or the defaults'); unknown keys are an error."""
    out = dict(fields)
    known = {f.name for f in fields_of(EditorConfig)}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"unknown editor settings {unknown} (known: {sorted(known)})")
    base = base or EditorConfig()
    for group in ("hyper", "value_opt"):
        if isinstance(out.get(group), dict):
            part = dict(out[group])
            current = getattr(base, group)
            extra = sorted(set(part) - {f.name for f in fields_of(current)})
            if extra:
                raise ValueError(f"unknown {group} settings {extra}")
            out[group] = replace(current, **part)
    return out


class NoHyperNetworkError(RuntimeError):
    """A hyper-network operation on an editor that optimises its values instead."""


@dataclass
class EditRows:
    keys: torch.Tensor  # (n, d_in) fp32
    values: torch.Tensor  # (n, d_out) fp32, value differences d_j
    owner: torch.Tensor  # (n,) long, index of the request each row came from
    # the keys each edit was seen at, one per context and sent paraphrase, before a row
    # averages them (value-optimising spread; a scope gate opens near any of them)
    context_keys: torch.Tensor | None = None


@dataclass
class CachedRows:
    """Raw cache-pass rows of one module, before the hyper-network."""

    keys: torch.Tensor  # (n, d_in) fp32
    grads: torch.Tensor  # (n, d_out) fp32
    owner: torch.Tensor  # (n,) long


@dataclass
class WeightDelta:
    shifts: dict[str, torch.Tensor]  # module name -> S* (d_in, d_out) fp32, row convention
    rows: dict[str, EditRows] = field(default_factory=dict)
    # with EditorConfig.scope_gate: the shifts act only through this gate (gate.py)
    gate: ScopeGate | None = None


def target_loss_sum(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ token cross-entropy over the predicting positions (float32)."""
    return F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")


class MalmenEditor:
    def __init__(
        self,
        adapter: ModelAdapter,
        tokenizer: Any,
        nets: HyperNetBank | None,
        config: EditorConfig,
    ):
        if nets is not None and nets.shapes != adapter.shapes():
            raise CheckpointError(
                f"hyper-networks are for modules {nets.shapes}, the model edits {adapter.shapes()}"
            )
        if nets is None and config.values != "optimise":
            raise NoHyperNetworkError('an editor without a hyper-network needs values="optimise"')
        if config.values == "optimise" and config.eta_scale != 1.0:
            log.warning(
                "eta_scale=%s has no effect on a value-optimising editor (it scales the "
                "hyper-network's values); trade edit strength for locality with `preserve`",
                config.eta_scale,
            )
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.config = config
        self._nets = nets.to(self.device) if nets is not None else None
        if self._nets is not None:
            self._nets.eval()  # normaliser frozen unless a trainer switches to train()
        self.checkpoint_sha256: str | None = None
        self.key_prior: KeyPrior | None = None
        # the deployment's protected prompts (`protect`); the Gram of those the solve now
        # holds (priors() adds it), the whole list's once built (protect_rounds 0), and the
        # indices of the prompts the last `hold_protected` held
        self.protected: ProtectedSet | None = None
        self._held_gram: dict[str, torch.Tensor] | None = None
        self._all_gram: dict[str, torch.Tensor] | None = None
        self.last_held: list[int] = []
        # E[k kᵀ] and the held directions' term per module, built once per `key_prior` and
        # hold setting (μ scales E[k kᵀ] per solve: with `preserve_ref_edits` μ changes with
        # every joint version's edit count)
        self._prior_cache: tuple[KeyPrior | None, tuple[int, float], dict[str, Any]] = (
            None,
            (0, 0.0),
            {},
        )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def random_init(
        cls, loaded: LoadedModel, config: EditorConfig | None = None, seed: int = 0
    ) -> MalmenEditor:
        config = config or EditorConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = HyperNetBank(loaded.adapter.shapes(), config.hyper)
        return cls(loaded.adapter, loaded.tokenizer, nets, config)

    @classmethod
    def from_checkpoint(cls, path: Path, loaded: LoadedModel, **overrides: Any) -> MalmenEditor:
        """Load a checkpoint written by `save_editor`; `overrides` are EditorConfig fields."""
        state, cfg, sha, prior = load_editor_state(Path(path))
        saved = {n: tuple(s) for n, s in cfg["modules"].items()}
        if saved != loaded.adapter.shapes():
            raise CheckpointError(
                f"editor checkpoint {path} was trained for modules {saved} "
                f"(model_type {cfg.get('model_type')}), but this model edits "
                f"{loaded.adapter.shapes()}; train an editor for this model and layer set"
            )
        known = {f.name for f in fields_of(EditorConfig)}
        saved_fields = {k: v for k, v in cfg.get("editor", {}).items() if k in known}
        config = EditorConfig(**config_fields({**saved_fields, "hyper": cfg["hyper"]}))
        config = replace(config, **config_fields(overrides, base=config))
        nets = None
        if state is not None:
            nets = HyperNetBank(loaded.adapter.shapes(), config.hyper)
            nets.load_state_dict(state)
        editor = cls(loaded.adapter, loaded.tokenizer, nets, config)
        editor.checkpoint_sha256 = sha
        editor.key_prior = prior
        return editor

    @classmethod
    def optimising(
        cls, loaded: LoadedModel, config: EditorConfig | None = None, prior: KeyPrior | None = None
    ) -> MalmenEditor:
        """An editor whose values are optimised per fact (no hyper-network, no training)."""
        config = replace(config or EditorConfig(), values="optimise")
        editor = cls(loaded.adapter, loaded.tokenizer, None, config)
        editor.key_prior = prior
        return editor

    # -- properties -------------------------------------------------------------------
    @property
    def nets(self) -> HyperNetBank:
        if self._nets is None:
            raise NoHyperNetworkError(
                "this editor optimises its values per fact and has no hyper-network"
            )
        return self._nets

    @property
    def has_hypernet(self) -> bool:
        return self._nets is not None

    @property
    def model(self) -> torch.nn.Module:
        return self.adapter.model

    @property
    def model_config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preserve_weight(self, n_edits: int | None = None) -> float:
        """The μ a solve of `n_edits` facts uses (`preserve_ref_edits`; the base μ when
        None); 0 when the prior is off (μ ≤ 0 or no `key_prior`)."""
        mu, ref = float(self.config.preserve), self.config.preserve_ref_edits
        if mu <= 0 or self.key_prior is None:
            return 0.0
        if ref is None or n_edits is None:
            return mu
        return mu * max(1.0, n_edits / ref)

    def priors(self, n_edits: int | None = None) -> dict[str, torch.Tensor | None]:
        """The term each module's solve adds to KᵀK + λI: μ·E[k kᵀ] (+ the held directions'
        weight, `hold_rank`) when the preservation prior is on, plus w·Σ k kᵀ of the
        protected prompts the solve holds (`hold_protected`); None for a module with
        neither.  μ for a solve of `n_edits` facts (`preserve_weight`)."""
        out = self._key_priors(n_edits)
        if self._held_gram is None or self.config.protect_weight == 0:
            return out
        w = self.config.protect_weight
        for n, p in out.items():
            held = w * self._held_gram[n]
            out[n] = held if p is None else p + held.to(p.dtype)
        return out

    def _key_priors(self, n_edits: int | None) -> dict[str, torch.Tensor | None]:
        mu, prior, rank = self.preserve_weight(n_edits), self.key_prior, self.config.hold_rank
        if prior is None or (mu == 0.0 and rank == 0):
            return {n: None for n in self.adapter.names}
        setting = (rank, self.config.hold_weight)
        if self._prior_cache[0] is not prior or self._prior_cache[1] != setting:
            parts = {n: self._prior_parts(prior, n) for n in self.adapter.names}
            self._prior_cache = (prior, setting, parts)
        parts = self._prior_cache[2]
        return {n: mu * m if h is None else mu * m + h for n, (m, h) in parts.items()}

    def protect(
        self,
        prompts: Sequence[LocalityPrompt] | ProtectedSet,
        progress: bool = False,
        same_weights: bool = False,
    ) -> ProtectedSet | None:
        """Protect `prompts` (with their answers, or the model's own continuations) from
        every solve from now on, replacing any list given before; [] removes protection.
        Records the model's answers now: call it on the unedited weights — or pass a
        `ProtectedSet` already read from them (`protect.protected_set`), which several
        editors can share.  `same_weights`: the model holds the unedited weights the list
        given before was read from, so its prompts are not read again (a list that grows
        by a few prompts costs those few).  Returns the set (None for [])."""
        cfg = self.config
        held: ProtectedSet | None
        if not len(prompts):
            held = None
        elif isinstance(prompts, ProtectedSet):
            held = prompts
        else:  # read before anything is replaced: a list that fails leaves the old one
            before = self.protected if same_weights else None
            held = protected_set(
                self.model, self.tokenizer, prompts, cfg.lm_batch_size, self.adapter, before
            )
        self.protected, self._all_gram, self.last_held = held, None, []
        if held is not None and cfg.protect_rounds == 0:
            self._all_gram = self._gram(range(len(held)), progress)
        return held

    def _gram(self, idx: Iterable[int], progress: bool = False) -> dict[str, torch.Tensor]:
        assert self.protected is not None
        texts = [self.protected.texts[i] for i in idx]
        cfg = self.config
        return held_gram(
            self.adapter, self.tokenizer, texts, cfg.lm_batch_size, cfg.max_length, progress
        )

    def hold_protected(
        self,
        solve: Callable[[], dict[str, torch.Tensor]],
        masters: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`solve()` (a solve that reads `priors()`, rows and all) holding the protected
        prompts: all of them (`protect_rounds` 0), or in rounds — solve holding those held
        so far (none at first), find the protected prompts whose answer its shifts change
        on `masters` (default: the weights the model holds now), hold them too, solve
        again; at most `protect_rounds` re-solves.  `last_held` names the prompts held."""
        held, cfg = self.protected, self.config
        if held is None or cfg.protect_weight == 0:
            self.last_held = []
            return solve()
        if cfg.protect_rounds == 0:
            if self._all_gram is None:
                self._all_gram = self._gram(range(len(held)))
            self._held_gram, self.last_held = self._all_gram, list(range(len(held)))
            try:
                return solve()
            finally:
                self._held_gram = None
        chosen: list[int] = []
        try:
            self._held_gram = None
            for round_ in range(cfg.protect_rounds + 1):
                shifts = solve()
                if round_ == cfg.protect_rounds:
                    break
                taken = set(chosen)
                new = [i for i in self._changed_by(shifts, masters) if i not in taken]
                if not new:
                    break
                gram = self._gram(new)
                if self._held_gram is not None:
                    gram = {n: g + self._held_gram[n] for n, g in gram.items()}
                self._held_gram = gram
                chosen += new
            self.last_held = sorted(chosen)
            return shifts
        finally:
            self._held_gram = None

    def _changed_by(
        self, shifts: dict[str, torch.Tensor], masters: dict[str, torch.Tensor] | None
    ) -> list[int]:
        """The protected prompts whose answer `masters` + `shifts` changes (the model is
        restored bit-exactly afterwards)."""
        from editor_core.apply import apply_delta, restore, snapshot
        from editor_core.evaluate import changed_prompts

        assert self.protected is not None
        now = snapshot(self.adapter)
        try:
            apply_delta(self.adapter, shifts, now if masters is None else masters)
            cfg = self.config
            return changed_prompts(
                self.model,
                self.tokenizer,
                self.protected.record,
                cfg.lm_batch_size,
                cfg.protect_margin,
            )
        finally:
            restore(self.adapter, now)

    def _prior_parts(self, prior: KeyPrior, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(E[k kᵀ], hold_weight·U_r U_rᵀ or None without `hold_rank`) of one module,
        (d_in, d_in) each; float64 when holding: next to a weight of 1e9, float32 would
        lose every other term of the system."""
        m, rank = prior.matrix(name), self.config.hold_rank
        if rank == 0:
            return m, None
        basis = prior.basis[name]  # (d_in, r_prior), eigenvalues ascending
        if rank > basis.shape[1]:
            raise ValueError(
                f"hold_rank {rank} exceeds the {basis.shape[1]} directions the prior stores"
            )
        u = basis[:, basis.shape[1] - rank :].double()  # (d_in, rank): the top directions
        return m.double(), self.config.hold_weight * (u @ u.T)

    def lambdas(self) -> dict[str, float]:
        if self.config.lambda_override is not None:
            return {n: float(self.config.lambda_override) for n in self.adapter.names}
        if self._nets is None:
            return {n: 1.0 for n in self.adapter.names}
        with torch.no_grad():
            return {n: float(self.nets.lam(n)) for n in self.adapter.names}

    # -- the cache pass ---------------------------------------------------------------
    def cache(
        self, requests: Sequence[EditRequest], bf16: tuple[bool, bool] = (False, False)
    ) -> dict[str, CachedRows]:
        """Keys and value-gradients at the predicting positions, in LM mini-batches.

        The loss is the SUM of token cross-entropy over target tokens, not the mean over
        the mini-batch: with a mean, a fact's gradient would depend on which other facts
        share its mini-batch, breaking chunk invariance and joint mode (edits computed
        separately must equal edits computed together).  The frozen normaliser absorbs
        the scale.
        """
        names = self.adapter.names
        parts: dict[str, list[CachedRows]] = {n: [] for n in names}
        bs = self.config.lm_batch_size
        for start in range(0, len(requests), bs):
            batch = encode_edits(
                self.tokenizer,
                requests[start : start + bs],
                self.config.max_length,
                self.config.key_position,
            ).to(self.device)
            mask = batch.keyed_mask  # (B, L) the rows: predicting or subject positions
            owner = mask.nonzero()[:, 0] + start  # (n_b,) same order as x[mask]
            with cache_keys_and_outputs(self.adapter, mask) as cache:
                with grad_from(self.adapter, *bf16):
                    logits = self.model(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask
                    ).logits  # (B, L, V)
                    loss = target_loss_sum(logits, batch.labels, batch.predict_mask)
                outputs = [cache.outputs[n] for n in names]
                grads = torch.autograd.grad(loss, outputs)
            for n, g in zip(names, grads, strict=True):
                parts[n].append(CachedRows(cache.keys[n], g[mask].float(), owner))
            del logits, loss, outputs, grads, cache
        return {
            n: CachedRows(
                torch.cat([p.keys for p in ps]),  # (n, d_in)
                torch.cat([p.grads for p in ps]),  # (n, d_out)
                torch.cat([p.owner for p in ps]),  # (n,)
            )
            for n, ps in parts.items()
        }

    def value_diffs(self, name: str, cached: CachedRows) -> torch.Tensor:
        """Hyper-network over the rows in chunks (grad follows the caller's mode): (n, d_out)."""
        c = self.config.hyper_chunk
        out = [
            self.nets.value_diffs(name, cached.keys[i : i + c], cached.grads[i : i + c])
            for i in range(0, cached.keys.shape[0], c)
        ]
        return torch.cat(out) * self.config.eta_scale

    def with_subjects(self, requests: Sequence[EditRequest]) -> list[EditRequest]:
        """`requests` as this editor reads them: a subject-keyed editor gives each that names
        no subject the one its prompt (and paraphrases) name (`subjects.with_subjects`);
        the others read no subject and get them unchanged."""
        if not self.config.keys_on_subject:
            return list(requests)
        return with_subjects(requests)

    def anchor_rows(self, requests: Sequence[EditRequest]) -> dict[str, EditRows]:
        """Zero-value rows owned by the edit they belong to: its subject anchors (keys
        scaled by √ν) and its template pins (every prompt token but the subject's, keys
        scaled by √pin_weight); empty (0 rows) when both are off or no request names a
        subject found in its prompt."""
        cfg = self.config
        anchors, owners = anchor_requests(requests, cfg.anchors, cfg.anchor_names)
        keys: dict[str, list[torch.Tensor]] = {n: [] for n in self.adapter.names}
        owner_parts: list[torch.Tensor] = []
        sources: list[tuple[Sequence[EditRequest], list[int], KeyMask, float]] = []
        if anchors:
            sources.append((anchors, owners, cfg.key_position, cfg.anchor_weight))
        if cfg.pin_weight > 0:
            sources.append((requests, list(range(len(requests))), "template", cfg.pin_weight))
        for reqs, own, where, weight in sources:
            index = torch.tensor(own, dtype=torch.long, device=self.device)
            scale = math.sqrt(weight)
            batches = iter_keys(
                self.adapter, self.tokenizer, reqs, cfg.lm_batch_size, cfg.max_length, where
            )
            for owner, k in batches:
                owner_parts.append(index[owner])
                for n in keys:
                    keys[n].append(k[n] * scale)
        out: dict[str, EditRows] = {}
        for m in self.adapter.modules:
            if owner_parts:
                k_all = torch.cat(keys[m.name])  # (n_a, d_in)
                owner_all = torch.cat(owner_parts)
            else:
                k_all = torch.zeros(0, m.d_in, device=self.device)
                owner_all = torch.zeros(0, dtype=torch.long, device=self.device)
            values = k_all.new_zeros(k_all.shape[0], m.d_out)  # (n_a, d_out)
            out[m.name] = EditRows(k_all, values, owner_all)
        return out

    # -- public API -------------------------------------------------------------------
    def compute_rows(
        self, requests: Sequence[EditRequest], progress: bool = False
    ) -> dict[str, EditRows]:
        """Edit rows (hyper-network or optimised value differences), then anchor rows."""
        if self.config.values == "optimise":
            return self.joint_rows(requests, self.residual_targets(requests, progress).z, progress)
        return self._with_anchors(requests, self.hypernet_rows(requests))

    def _with_anchors(
        self,
        requests: Sequence[EditRequest],
        edit_rows: dict[str, EditRows],
        anchored: dict[str, EditRows] | None = None,
    ) -> dict[str, EditRows]:
        if anchored is None:
            anchored = self.anchor_rows(requests)
        return {
            n: EditRows(
                torch.cat([r.keys, anchored[n].keys]),
                torch.cat([r.values, anchored[n].values]),
                torch.cat([r.owner, anchored[n].owner]),
                r.context_keys,
            )
            for n, r in edit_rows.items()
        }

    def cache_edited(self, requests: Sequence[EditRequest]) -> dict[str, CachedRows]:
        """`cache` of `requests` and of their first `paraphrase_rows` paraphrases each
        (edited with the same target), every row owned by its request's index."""
        extra = paraphrase_edits(requests, self.config.paraphrase_rows)
        cached = self.cache([*requests, *(q for q, _ in extra)])
        owners = [*range(len(requests)), *(i for _, i in extra)]
        index = torch.tensor(owners, dtype=torch.long, device=self.device)
        return {n: replace(c, owner=index[c.owner]) for n, c in cached.items()}

    def hypernet_rows(self, requests: Sequence[EditRequest]) -> dict[str, EditRows]:
        cached = self.cache_edited(requests)
        with torch.no_grad():
            return {n: EditRows(c.keys, self.value_diffs(n, c), c.owner) for n, c in cached.items()}

    def residual_targets(
        self,
        requests: Sequence[EditRequest],
        progress: bool = False,
        n_edits: int | None = None,
    ) -> ResidualTargets:
        """Per fact, the residual it asks for after the last edited layer (optimize.py);
        `n_edits`: the edits in the solve they go into (default len(requests)): the value
        clamp may depend on it (`ValueOptConfig.clamp_for`)."""
        cfg = self.config
        return residual_targets(
            self.adapter, self.tokenizer, requests, cfg.value_opt, cfg.max_length, progress, n_edits
        )

    def spread_rows(
        self,
        requests: Sequence[EditRequest],
        z: torch.Tensor,
        progress: bool = False,
        anchored: dict[str, EditRows] | None = None,
    ) -> dict[str, EditRows]:
        """Rows of `requests` from their residual targets `z` (F, n_slots, H), spread over the
        edited layers from the weights the model holds now.  The spread solves each layer
        with this editor's own λ and prior, and with the `anchored` rows (anchor_rows) when
        given, so `solve(rows + anchored)` reproduces its shifts."""
        lams, priors = self.lambdas(), self.priors(len(requests))
        dtype, cfg = self.config.solve_dtype, self.config

        def solve(name: str, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            if anchored is not None and anchored[name].keys.shape[0]:
                keys = torch.cat([keys, anchored[name].keys])
                values = torch.cat([values, anchored[name].values])
            return ridge_solve(keys, values, lams[name], dtype, prior=priors[name])

        seen: dict[str, torch.Tensor] = {}
        keys, values, fact = spread_rows(
            self.adapter,
            self.tokenizer,
            requests,
            z.to(self.device),
            cfg.value_opt,
            solve,
            cfg.max_length,
            progress,
            seen,
        )
        return {n: EditRows(keys[n], values[n], fact, seen.get(n)) for n in self.adapter.names}

    @property
    def respreads(self) -> bool:
        """Joint mode re-spreads every live edit's residual target at each version."""
        return self.config.values == "optimise" and self.config.value_opt.respread

    def target_groups(
        self, requests: Sequence[EditRequest], ids: Sequence[str]
    ) -> list[tuple[str, ...]]:
        """Per request, the ids of the requests (itself included, sorted) whose residual
        targets `residual_targets(requests)` finds together: its subject group."""
        if not self.config.value_opt.group_subjects:
            return [(i,) for i in ids]
        out: list[tuple[str, ...]] = [()] * len(requests)
        for g in subject_groups(requests):
            members = tuple(sorted(ids[i] for i in g))
            for i in g:
                out[i] = members
        return out

    def target_clamp(self, n_edits: int) -> float:
        """The value clamp of the residual targets for a solve of `n_edits` edits."""
        return self.config.value_opt.clamp_for(n_edits)

    def refresh_targets(
        self,
        requests: Sequence[EditRequest],
        ids: Sequence[str],
        z: Sequence[torch.Tensor],
        found_with: Sequence[tuple[str, ...] | None],
        progress: bool = False,
        clamps: Sequence[float | None] | None = None,
    ) -> tuple[torch.Tensor, list[tuple[str, ...]], list[int]]:
        """Residual targets of the live edits `requests` for one joint version.

        `z[i]` (n_slots, H) was found together with the edits `found_with[i]` (None: alone).
        Edits that name one subject must share their δ (optimize.py, `group_subjects`);
        when a subject's live edits were not all found together (they came in different
        batches, or one of them was withdrawn), the group is re-optimised from the weights
        the model holds now — the base weights, in joint mode.  So is a target found with another
        value clamp (`clamps[i]`; None: `max_norm`, as before the clamp rule) than a solve of
        all `requests` uses (`ValueOptConfig.clamp_for`): a version is then exactly the
        simultaneous edit of its live facts.  Returns (targets (F, n_slots, H) in request
        order, each edit's group now, the indices re-optimised); given `clamps`, every target
        returned has the clamp `target_clamp(len(requests))`."""
        want = self.target_groups(requests, ids)
        changed = {ids[i] for i, fw in enumerate(found_with) if tuple(fw or (ids[i],)) != want[i]}
        if clamps is not None:
            vo, now = self.config.value_opt, self.target_clamp(len(requests))
            changed |= {
                ids[i] for i, c in enumerate(clamps) if (vo.max_norm if c is None else c) != now
            }
        stale = [i for i in range(len(requests)) if changed.intersection(want[i])]  # whole groups
        out = [t.cpu() for t in z]
        if stale:
            fresh = self.residual_targets(
                [requests[i] for i in stale], progress, n_edits=len(requests)
            ).z.cpu()
            for k, i in enumerate(stale):
                out[i] = fresh[k]
        return torch.stack(out), want, stale

    def joint_rows(
        self, requests: Sequence[EditRequest], z: torch.Tensor, progress: bool = False
    ) -> dict[str, EditRows]:
        """All live edits' rows for one joint solve, re-spread from the weights the model
        holds now (the base weights, in joint mode), plus their anchor rows: zero-value
        rows at other names put in each subject's place, which every layer of the spread
        solves with, so the edit keeps off the names it does not name."""
        anchored = self.anchor_rows(requests)
        rows = self.spread_rows(requests, z, progress, anchored)
        return self._with_anchors(requests, rows, anchored)

    def respread_solve(
        self,
        requests: Sequence[EditRequest],
        z: torch.Tensor,
        progress: bool = False,
        masters: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The shifts of one joint solve of `requests` from their residual targets `z`
        (`respread_delta`)."""
        return self.respread_delta(requests, z, progress, masters).shifts

    def respread_delta(
        self,
        requests: Sequence[EditRequest],
        z: torch.Tensor,
        progress: bool = False,
        masters: dict[str, torch.Tensor] | None = None,
    ) -> WeightDelta:
        """One joint solve of `requests` from their residual targets `z` (`joint_rows`,
        then `solve`), holding the protected prompts (`hold_protected`; the spread is redone
        in each round, since its layer solves hold them too), with the last round's rows
        and, when configured, its scope gate."""
        made: list[dict[str, EditRows]] = []

        def solve() -> dict[str, torch.Tensor]:
            made.append(self.joint_rows(requests, z, progress))  # the rows of each round
            return self.solve(made[-1], len(requests))

        shifts = self.hold_protected(solve, masters)
        return self.gated(WeightDelta(shifts=shifts, rows=made[-1]))

    def solve(
        self, rows: dict[str, EditRows], n_edits: int | None = None
    ) -> dict[str, torch.Tensor]:
        """One ridge solve per module; `n_edits`: how many facts the rows hold (μ may grow
        with it, `preserve_ref_edits`; pass what `spread_rows` was given)."""
        lams, priors = self.lambdas(), self.priors(n_edits)
        return {
            n: ridge_solve(r.keys, r.values, lams[n], self.config.solve_dtype, prior=priors[n])
            for n, r in rows.items()
        }

    def compute_delta(self, requests: Sequence[EditRequest], progress: bool = False) -> WeightDelta:
        """The weight change that applies `requests` at once, holding the protected prompts
        (`hold_protected`); `progress`: bars over the value optimisation and the spread
        (the value-optimising editor's slow steps)."""
        if self.config.values == "optimise":
            z = self.residual_targets(requests, progress).z
            return self.respread_delta(requests, z, progress)
        rows = self._with_anchors(requests, self.hypernet_rows(requests))
        shifts = self.hold_protected(lambda: self.solve(rows, len(requests)))
        return self.gated(WeightDelta(shifts, rows))

    def gated(self, delta: WeightDelta) -> WeightDelta:
        """`delta` with its scope gate (the keys of its rows) when the config asks for one."""
        if self.config.scope_gate is not None:
            delta.gate = ScopeGate.of_rows(
                self.config.scope_gate, delta.rows, self.config.scope_gate_mode
            )
        return delta
