"""Meta-training of the hyper-networks (MALMEN.md §3).

One meta-step on `n_edits` examples:
1. cache pass on the edit prompts (keys u, value-gradients g); the hyper-network, without
   grad, gives value differences D; the normal equation gives S* per module;
2. with S* added through forward hooks (base weights untouched), L_meta = L_gen on the
   paraphrases + loc_coef · KL(p_base ‖ p_edited) on the locality prompts; G_S = ∂L/∂S
   accumulated over LM mini-batches (only S requires grad);
3. closed-form backward through the solve: ∂L/∂D = K A⁻¹G_S, ∂L/∂log λ = −λ⟨A⁻¹G_S, S*⟩;
4. the hyper-network again, WITH grad, chunk by chunk: backprop Σ⟨∂L/∂d_j, d_j⟩;
   clip the global grad norm to 1; Adam with its own learning rate for log λ.
Memory: the n × (d_in + d_out) rows per module plus one d_in² Gram at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editor_core.checkpoint import (
    load_trainer_state,
    replace_dir,
    save_editor,
    save_trainer_state,
)
from editor_core.editor import MalmenEditor, target_loss_sum
from editor_core.encoding import EditRequest, encode_edits
from editor_core.hooks import grad_from, shifted
from editor_core.loading import bf16_is_fast
from editor_core.metrics import agreement, encode_locality, locality_argmax, token_accuracy
from editor_core.progress import bar as progress_bar
from editor_core.solve import ridge_backward, ridge_solve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    edit: EditRequest
    paraphrase: EditRequest
    locality_prompt: str
    locality_answer: str | None = None


@dataclass
class TrainConfig:
    n_edits: int = 64
    steps: int = 100
    lm_batch_size: int = 32
    hyper_chunk: int = 1024
    lr: float = 1e-5
    lambda_lr: float = 1e-2
    loc_coef: float = 1.0
    val_every: int = 20
    val_n: int = 64
    ckpt_every: int = 20
    seed: int = 0
    out_dir: Path | None = None
    resume: bool = False
    bf16_frozen: bool = False  # bf16 autocast for the frozen layers below the edited ones
    bf16_all: bool = False  # ... and for everything from the edited layers up, too
    device: str | None = None  # informational: the model is placed by whoever loads it
    clip_norm: float = 1.0
    progress: bool = True
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in checkpoints
    # Stop cleanly (saving `last/`) after this much wall time, so that a long run can be
    # done in resumable pieces on machines that are taken back from time to time.
    max_seconds: float | None = None


class MalmenTrainer:
    def __init__(
        self,
        loaded: Any,
        editor: MalmenEditor,
        train: list[TrainExample],
        val: list[TrainExample],
        cfg: TrainConfig,
    ):
        if len(train) < cfg.n_edits:
            raise ValueError(f"{len(train)} training examples, fewer than n_edits={cfg.n_edits}")
        self.loaded, self.editor, self.train_set, self.val_set, self.cfg = (
            loaded,
            editor,
            train,
            val,
            cfg,
        )
        if (cfg.bf16_frozen or cfg.bf16_all) and not bf16_is_fast(editor.device):
            log.warning(
                "bf16 autocast was asked for, but %s has no fast bf16 (no AVX-512 BF16 or "
                "AMX): torch emulates it, ~80× slower than float32; turn bf16_frozen/bf16_all "
                "(--bf16-frozen/--bf16-all) off here",
                editor.device,
            )
        # The cache pass and validation use the editor's batching; align it with cfg.
        editor.config = replace(
            editor.config, lm_batch_size=cfg.lm_batch_size, hyper_chunk=cfg.hyper_chunk
        )
        self.adapter = editor.adapter
        self.model = editor.model
        self.tokenizer = editor.tokenizer
        nets = editor.nets
        lam_ids = {id(p) for p in nets.log_lambda_params()}
        self.opt = torch.optim.Adam(
            [
                {"params": [p for p in nets.parameters() if id(p) not in lam_ids], "lr": cfg.lr},
                {"params": nets.log_lambda_params(), "lr": cfg.lambda_lr},
            ]
        )
        self.step = 0
        self.best = float("-inf")
        self.history: list[dict[str, Any]] = []

    # -- one meta-step ----------------------------------------------------------------
    def meta_step(self, batch: Sequence[TrainExample]) -> dict[str, float]:
        ed, nets, cfg = self.editor, self.editor.nets, self.cfg
        nets.train()
        # meta-training speed: bf16 autocast below / above the edited layers
        cached = ed.cache([ex.edit for ex in batch], bf16=(cfg.bf16_frozen, cfg.bf16_all))
        # Subject anchors (zero-value rows, constants of the solve): K gains rows, D zeros.
        # (bf16 autocast with --bf16-frozen: anchors need keys, not exact values)
        with torch.autocast(
            ed.device.type, torch.bfloat16, enabled=cfg.bf16_frozen or cfg.bf16_all
        ):
            anchored = ed.anchor_rows([ex.edit for ex in batch])
        keys = {n: torch.cat([r.keys, anchored[n].keys]) for n, r in cached.items()}
        c = cfg.hyper_chunk
        for name, rows in cached.items():
            for i in range(0, rows.keys.shape[0], c):
                nets.observe(name, rows.keys[i : i + c], rows.grads[i : i + c])
        with torch.no_grad():
            lams = {n: float(nets.lam(n)) for n in cached}
            priors = ed.priors()
            shifts = {}
            for name, rows in cached.items():
                diffs = torch.cat(
                    [
                        nets.value_diffs(name, rows.keys[i : i + c], rows.grads[i : i + c])
                        for i in range(0, rows.keys.shape[0], c)
                    ]
                )  # (n, d_out)
                diffs = torch.cat([diffs, anchored[name].values])  # (n + n_a, d_out)
                shifts[name] = ridge_solve(
                    keys[name], diffs, lams[name], ed.config.solve_dtype, prior=priors[name]
                )
        grads, gen, loc = self.shift_grads(batch, shifts)
        self.opt.zero_grad(set_to_none=True)
        for name, rows in cached.items():
            grad_d, grad_log_lam = ridge_backward(
                keys[name],
                shifts[name],
                grads[name],
                lams[name],
                ed.config.solve_dtype,
                prior=priors[name],
            )  # (n + n_a, d_out), ()
            grad_d = grad_d[: rows.keys.shape[0]]  # anchor values are constants
            nets.add_log_lambda_grad(name, grad_log_lam)
            for i in range(0, rows.keys.shape[0], c):
                d = nets.value_diffs(name, rows.keys[i : i + c], rows.grads[i : i + c])
                (grad_d[i : i + c] * d).sum().backward()
        norm = torch.nn.utils.clip_grad_norm_(nets.parameters(), cfg.clip_norm)
        self.opt.step()
        nets.eval()
        return {"loss": gen + cfg.loc_coef * loc, "gen": gen, "loc": loc, "grad_norm": float(norm)}

    def shift_grads(
        self, batch: Sequence[TrainExample], shifts: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], float, float]:
        """G_S = ∂L_meta/∂S over LM mini-batches; returns (G_S, L_gen, L_loc)."""
        cfg, device = self.cfg, self.editor.device
        leaves = {n: s.detach().requires_grad_(True) for n, s in shifts.items()}
        names = list(leaves)
        grads = {n: torch.zeros_like(s) for n, s in shifts.items()}
        bs = cfg.lm_batch_size
        para = [
            encode_edits(self.tokenizer, [ex.paraphrase for ex in batch[i : i + bs]])
            for i in range(0, len(batch), bs)
        ]
        n_tokens = sum(sum(b.target_lengths) for b in para)
        locs = [
            encode_locality(
                self.tokenizer,
                [ex.locality_prompt for ex in batch[i : i + bs]],
                [ex.locality_answer for ex in batch[i : i + bs]],
            )
            for i in range(0, len(batch), bs)
        ]
        n_pos = sum(int(b.mask.sum()) for b in locs)
        gen_total = loc_total = 0.0

        def accumulate(loss: torch.Tensor) -> None:
            for n, g in zip(
                names, torch.autograd.grad(loss, [leaves[n] for n in names]), strict=True
            ):
                grads[n] += g

        for b in para:
            b = b.to(device)
            with (
                shifted(self.adapter, leaves),
                grad_from(self.adapter, cfg.bf16_frozen, cfg.bf16_all),
            ):
                logits = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
                loss = target_loss_sum(logits, b.labels, b.predict_mask) / n_tokens  # mean
            accumulate(loss)
            gen_total += float(loss.detach())
        for lb in locs:
            ids, attn, mask = (
                lb.input_ids.to(device),
                lb.attention_mask.to(device),
                lb.mask.to(device),
            )
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=cfg.bf16_all):
                base = self.model(input_ids=ids, attention_mask=attn).logits[mask]
                log_p = F.log_softmax(base.float(), -1)  # (m, V)
            with (
                shifted(self.adapter, leaves),
                grad_from(self.adapter, cfg.bf16_frozen, cfg.bf16_all),
            ):
                logits = self.model(input_ids=ids, attention_mask=attn).logits[mask]
                log_q = F.log_softmax(logits.float(), -1)  # (m, V)
                kl = (log_p.exp() * (log_p - log_q)).sum() / n_pos  # KL(p_base ‖ p_edited)
                loss = cfg.loc_coef * kl
            accumulate(loss)
            loc_total += float(kl.detach())
        return grads, gen_total, loc_total

    # -- validation -------------------------------------------------------------------
    def validate(self, examples: Sequence[TrainExample]) -> dict[str, float]:
        """ES, GS (teacher-forced token accuracy) and LS (argmax agreement with the base)."""
        if not examples:
            return {}
        ed = self.editor
        ed.nets.eval()
        edits = [ex.edit for ex in examples]
        loc = encode_locality(
            self.tokenizer,
            [ex.locality_prompt for ex in examples],
            [ex.locality_answer for ex in examples],
        )
        base = locality_argmax(self.model, loc)
        shifts = ed.compute_delta(edits).shifts
        bs = self.cfg.lm_batch_size
        with shifted(self.adapter, shifts):
            es = token_accuracy(self.model, self.tokenizer, edits, bs)
            gs = token_accuracy(self.model, self.tokenizer, [ex.paraphrase for ex in examples], bs)
            ls = agreement(locality_argmax(self.model, loc), base)
        return {"ES": sum(es) / len(es), "GS": sum(gs) / len(gs), "LS": ls}

    # -- the loop ---------------------------------------------------------------------
    def sample(self, step: int) -> list[TrainExample]:
        """Deterministic in (seed, step), so a resumed run draws what it would have."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        idx = torch.randperm(len(self.train_set), generator=g)[: self.cfg.n_edits].tolist()
        return [self.train_set[i] for i in idx]

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        out = Path(cfg.out_dir) if cfg.out_dir is not None else None
        if cfg.resume and out is not None and (out / "last").is_dir():
            self.step, self.best, self.history = load_trainer_state(
                out / "last", self.editor, self.opt
            )
            log.info("resumed from %s at step %d", out / "last", self.step)
        val = self.val_set[: cfg.val_n]
        bar = progress_bar(
            total=cfg.steps, initial=self.step, progress=cfg.progress, desc="meta-train"
        )
        metrics: dict[str, float] = {}
        started = time.monotonic()
        while self.step < cfg.steps:
            if cfg.max_seconds is not None and time.monotonic() - started > cfg.max_seconds:
                log.info("time budget of %.0f s spent at step %d", cfg.max_seconds, self.step)
                self.save("last", metrics)
                break
            stats = self.meta_step(self.sample(self.step))
            self.step += 1
            entry: dict[str, Any] = {"step": self.step, **stats}
            if val and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                metrics = self.validate(val)
                entry.update(metrics)
                score = sum(metrics.values()) / len(metrics)
                if score > self.best:
                    self.best = score
                    self.save("best", metrics)
            self.history.append(entry)
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}", **{k: f"{v:.2f}" for k, v in metrics.items()}
            )
            bar.update(1)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save("last", metrics)
        bar.close()
        if out is not None and self.history:
            from editor_core.plots import plot_training

            plot_training({"validation": self.history}, out / "training.png")
        return {"history": self.history, "best_score": self.best, "step": self.step}

    def save(self, which: str, metrics: dict[str, float]) -> None:
        if self.cfg.out_dir is None:
            return
        final = Path(self.cfg.out_dir) / which
        tmp = final.with_name(which + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        save_trainer_state(
            tmp, self.opt, {"step": self.step, "best": self.best, "history": self.history}
        )
        meta = {
            "n_edits": self.cfg.n_edits,
            "step": self.step,
            "metrics": metrics,
            "train_config": {
                "lr": self.cfg.lr,
                "lambda_lr": self.cfg.lambda_lr,
                "loc_coef": self.cfg.loc_coef,
                "seed": self.cfg.seed,
            },
            **self.cfg.meta,
        }
        save_editor(tmp, self.editor, meta)
        replace_dir(tmp, final)


def read_train_examples(path: Path, neighborhood_fraction: float = 0.5) -> list[TrainExample]:
    """Training triples from JSONL lines {"prompt", "target", "paraphrases": [...],
    "locality": {"prompt", "answer"?} or [...], "neighborhood": [...]}.

    When a line has both pools, `neighborhood_fraction` of the examples (chosen by line
    number, so the choice is deterministic) take their locality prompt from the
    neighbourhood pool: the same relation and phrasing with another subject.  Those
    teach the editor to key on the subject rather than the relation template (MALMEN.md
    §6).  Lines without a paraphrase or any locality prompt are skipped (counted in the
    log).  The richer fact format of `editor_core.data` is a superset of this one.
    """
    import json

    out: list[TrainExample] = []
    skipped = 0
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or "prompt" not in obj or "target" not in obj:
            raise ValueError(f"{path}:{n}: needs 'prompt' and 'target'")
        ordinary, neighbour = _first(obj.get("locality")), _first(obj.get("neighborhood"))
        use_neighbour = neighbour is not None and (
            ordinary is None or (n * 0.6180339887) % 1.0 < neighborhood_fraction
        )
        loc = neighbour if use_neighbour else ordinary
        paraphrases = obj.get("paraphrases") or []
        if not paraphrases or loc is None:
            skipped += 1
            continue
        out.append(
            TrainExample(
                EditRequest(obj["prompt"], obj["target"], obj.get("subject") or None),
                EditRequest(paraphrases[0], obj["target"], obj.get("subject") or None),
                loc["prompt"],
                loc.get("answer"),
            )
        )
    if skipped:
        log.warning("%s: %d lines without paraphrase or locality prompt skipped", path, skipped)
    return out


def _first(pool: Any) -> dict[str, Any] | None:
    """The first {"prompt", ...} of a locality field given as one object or a list."""
    item = pool[0] if isinstance(pool, list) and pool else pool
    return item if isinstance(item, dict) and item.get("prompt") else None
