"""Evaluation sweeps over editors: N simultaneous edits, sequential batches, ES–LS trade-off.

Every sweep restores the base weights when it ends; results are plain dicts (JSON-able).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from editor_core.apply import apply_delta, restore, snapshot
from editor_core.data.formats import Fact
from editor_core.encoding import EditRequest
from editor_core.evaluate import (
    BATCH_SIZE,
    Editor,
    LocalitySet,
    evaluate_edit,
    neighbourhood_of,
    prepare_locality,
    requests_of,
    same_subject_prompts,
    sample_draws,
    sample_facts,
    score_edited,
    summarise_draws,
    timed_delta,
)
from editor_core.joint import EditLedger, split_rows
from editor_core.loading import LoadedModel
from editor_core.metrics import token_accuracy
from editor_core.progress import bar

log = logging.getLogger(__name__)
SUMMARY_KEYS = (
    "es",
    "gs",
    "generation",
    "ls_ordinary",
    "ls_neighborhood",
    "ls_protected",
    "ls_nb_unprotected",
    "protected_held",
    "edit_seconds",
)


def run_simultaneous(
    loaded: LoadedModel,
    editors: dict[str, Editor],
    facts: Sequence[Fact],
    ns: Sequence[int],
    ordinary: LocalitySet,
    neighborhood: LocalitySet,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    draws: int = 1,
    protected: LocalitySet | None = None,
    only_draws: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """{editor: {str(N): metrics}} with N edits applied at once (same facts per N);
    `progress`: a bar over the runs and each editor's own bars inside them.  `draws` > 1
    repeats each N on disjoint sets of facts (`sample_draws`: the first is the one-draw
    run's) and reports their mean with its spread (`summarise_draws`).  `protected`: the
    prompts the editors were told to hold (`MalmenEditor.protect`), scored as
    `score_edited` says.  `only_draws` (0-based): run these of the `draws` only — one long
    run split over processes, each draw the same facts as in the whole run."""
    out: dict[str, dict[str, Any]] = {name: {} for name in editors}
    sets = {n: sample_draws(facts, n, seed, draws) for n in ns}
    for n, chosen_sets in sets.items():
        if 0 < len(chosen_sets) < draws:
            log.warning("N=%d: %d draws of disjoint facts fit, not %d", n, len(chosen_sets), draws)
    if only_draws is not None:
        sets = {n: [s[d] for d in only_draws if d < len(s)] for n, s in sets.items()}
    jobs = [(name, n, d) for n in ns for name in editors for d in range(len(sets[n]) or 1)]
    same: dict[tuple[int, int], LocalitySet] = {}  # per draw: the edited subjects' other facts
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for name, n, d in bar(jobs, desc="simultaneous", unit="run", progress=progress):
        if not sets[n]:
            msg = f"N={n} exceeds the {len(facts)} facts available"
            log.warning("%s: skipped, %s", name, msg)
            out[name][str(n)] = {"n": n, "skipped": msg}
            continue
        chosen = sets[n][d]
        nb = neighbourhood_of(chosen, neighborhood)
        if (n, d) not in same:  # the model holds the base weights between runs
            prompts = same_subject_prompts(facts, chosen)
            same[n, d] = prepare_locality(loaded.model, loaded.tokenizer, prompts)
        row = evaluate_edit(
            loaded, editors[name], chosen, ordinary, nb, batch_size, same[n, d], progress, protected
        )
        row["fact_ids"] = [f.id for f in chosen]  # which facts this draw edited
        if len(sets[n]) > 1:
            # each draw in the log as it ends: a run cut short keeps what it measured
            log.info(
                "%s N=%d draw %d/%d: %s",
                name,
                n,
                (only_draws[d] if only_draws is not None else d) + 1,
                draws if only_draws is not None else len(sets[n]),
                " ".join(f"{k} {row[k]:.3f}" for k in SUMMARY_KEYS if row.get(k) is not None),
            )
        runs.setdefault((name, n), []).append(row)
        if len(runs[name, n]) == len(sets[n]):
            out[name][str(n)] = summarise_draws(runs[name, n])
    return out


def run_sequential(
    loaded: LoadedModel,
    editor: Any,
    mode: str,
    facts: Sequence[Fact],
    n_batches: int,
    batch: int,
    ordinary: LocalitySet,
    neighborhood: LocalitySet,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    full_every: int = 1,
    score_at: Sequence[int] | None = None,
    progress: bool = True,
    protected: LocalitySet | None = None,
) -> list[dict[str, Any]]:
    """Batches of edits applied one after another; metrics after each batch.

    The ES of the first batch is scored after every batch; the full metrics (ES, GS, LS,
    generation over all edits so far) after every `full_every`-th batch and after the last
    (0: after the last only; negative: never — cheaper histories on a slow machine).

    mode "joint": every edit's rows are kept (computed against the base weights) and one
        least-squares solve over all edits so far is applied to the base weights.  An
        editor that `respreads` (values="optimise") keeps each edit's residual target
        instead and re-spreads all of them from the base weights at every batch (after
        re-optimising, as one group, the targets of a subject edited in several batches).
    mode "sequential": each batch's delta is computed on the already edited model and
        added to the current weights.

    `score_at`: the batches (1-based) after which anything is scored (default: every one;
    the last always).  A re-spreading editor's weights after batch t depend only on the
    edits so far, so it spreads only at those batches.  `progress`: a bar over the batches
    and the editor's own bars inside each.
    """
    if mode not in ("joint", "sequential"):
        raise ValueError(f"unknown sequential mode {mode!r}")
    total = min(len(facts), n_batches * batch)
    chosen = sample_facts(facts, total, seed) or []
    batches = [chosen[i : i + batch] for i in range(0, total, batch)]
    base = snapshot(loaded.adapter)
    ledger = EditLedger()
    live_reqs: list[EditRequest] = []  # joint mode, re-spreading editor: every edit so far
    live_ids: list[str] = []
    live_z: list[torch.Tensor] = []  # their residual targets, (n_slots, H) each
    live_with: list[tuple[str, ...]] = []  # and the edits each target was found with
    live_clamp: list[float] = []  # and the value clamp each was found with
    tok = loaded.tokenizer
    device = next(loaded.model.parameters()).device
    history: list[dict[str, Any]] = []
    try:
        steps = bar(batches, desc=f"sequential/{mode}", unit="batch", progress=progress)
        for t, facts_t in enumerate(steps):
            reqs = requests_of(facts_t, chosen)  # keep: what the whole run leaves alone
            last = t + 1 == len(batches)
            scored = last or score_at is None or t + 1 in score_at
            if mode == "joint" and getattr(editor, "respreads", False):
                restore(loaded.adapter, base)  # targets and spread from the base weights
                ids = [f.id for f in facts_t]
                live_reqs.extend(reqs)
                live_ids.extend(ids)
                # clamped for a solve of every live edit (ValueOptConfig.clamp_for)
                found = editor.residual_targets(reqs, progress, n_edits=len(live_reqs))
                live_z.extend(found.z.cpu())
                live_with.extend(editor.target_groups(reqs, ids))
                live_clamp.extend([found.clamp] * len(reqs))
                if scored:
                    z, live_with, _ = editor.refresh_targets(
                        live_reqs, live_ids, live_z, live_with, progress, clamps=live_clamp
                    )
                    live_clamp = [editor.target_clamp(len(live_reqs))] * len(live_reqs)
                    live_z = list(z)  # subjects edited across batches: one δ each
                    shifts = editor.respread_solve(live_reqs, z, progress)
                    apply_delta(loaded.adapter, shifts, base)
            elif mode == "joint":
                restore(loaded.adapter, base)  # rows against the base weights
                rows = editor.compute_rows(reqs, progress)
                for i, r in enumerate(split_rows(rows, len(reqs))):
                    ledger.add(facts_t[i].id, facts_t[i].prompt, r)
                shifts = _holding(
                    editor,
                    lambda: ledger.solve(
                        editor.lambdas(), editor.config.solve_dtype, editor.priors(len(ledger))
                    ),
                )
                apply_delta(loaded.adapter, shifts, base)
            else:
                delta, _ = timed_delta(editor, reqs, device, progress)
                apply_delta(loaded.adapter, delta, snapshot(loaded.adapter))
            if not scored:
                continue
            so_far = [f for b in batches[: t + 1] for f in b]
            full = full_every >= 0 and (last or (full_every > 0 and (t + 1) % full_every == 0))
            metrics: dict[str, Any] = {}
            if full:
                nb = neighbourhood_of(so_far, neighborhood)
                metrics = score_edited(
                    loaded, so_far, ordinary, nb, batch_size, protected=protected
                )
            first = token_accuracy(loaded.model, tok, requests_of(batches[0]), batch_size)
            history.append(
                {
                    "batch": t + 1,
                    "edits": len(so_far),
                    "es_first_batch": sum(first) / len(first),
                    **metrics,
                }
            )
    finally:
        restore(loaded.adapter, base)
    return history


def _holding(editor: Any, solve: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`solve()` holding the editor's protected prompts (`MalmenEditor.hold_protected`)."""
    hold = getattr(editor, "hold_protected", None)
    return hold(solve) if hold is not None else solve()


def run_tradeoff(
    loaded: LoadedModel,
    make_editor: Callable[..., Editor],
    facts: Sequence[Fact],
    n: int,
    eta_scales: Sequence[float],
    lambdas: Sequence[float],
    ordinary: LocalitySet,
    neighborhood: LocalitySet,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    preserves: Sequence[float] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """ES/GS/LS at N edits along three edit-time axes, one knob at a time:
    the η scale (λ and μ from the editor), λ (η × 1, μ from the editor) and the weight μ of
    the preservation prior (η × 1, the editor's λ).  `make_editor(eta, lam)` — or
    `make_editor(eta, lam, mu)` when `preserves` is given — builds an editor; None = the
    editor's own value.  Each row says which `knob` varied and the values in effect."""
    chosen = sample_facts(facts, min(n, len(facts)), seed) or []
    nb = neighbourhood_of(chosen, neighborhood)
    grid: list[tuple[str, float | None, float | None, float | None]] = [
        ("eta", e, None, None) for e in eta_scales
    ]
    grid += [("lambda", None, lam, None) for lam in lambdas]
    grid += [("preserve", None, None, mu) for mu in preserves]
    out = []
    for knob, eta, lam, mu in bar(grid, desc="trade-off", unit="setting", progress=progress):
        editor = make_editor(eta, lam) if mu is None else make_editor(eta, lam, mu)
        config = getattr(editor, "config", None)
        metrics = evaluate_edit(loaded, editor, chosen, ordinary, nb, batch_size, progress=progress)
        out.append(
            {
                "knob": knob,
                "eta_scale": eta if eta is not None else getattr(config, "eta_scale", 1.0),
                "lambda": lam,
                "preserve": getattr(config, "preserve", mu),
                **metrics,
            }
        )
    return out
