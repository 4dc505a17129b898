"""The preservation prior's weight μ against the number of simultaneous edits N, for the
value-optimising editor (malmen-opt), at a fraction of `factpatch eval`'s cost.

malmen-opt's residual targets (optimize.py: per-fact Adam at the subject's last token) do
not depend on μ; only the spread over the edited layers and the solve do.  So the targets
of the N facts are computed once (and cached on disk, so an interrupted sweep resumes),
and each μ costs one spread, one solve and one scoring pass.  The facts are the ones
`factpatch eval --n N --seed S` draws, the locality prompts the ones it scores, so a row
at the checkpoint's own μ reproduces `factpatch eval`'s row for malmen-opt.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mu_sweep.py \\
        --editor editor_core/checkpoints/smollm2-135m-instruct-optimise \\
        --facts data/facts/val.jsonl --locality data/facts/locality_val.jsonl \\
        --neighborhood data/facts/neighborhood_val.jsonl \\
        --n 256 --mu 3000,12000,48000 --out out/mu_sweep

Writes `rows.jsonl` (one line per (N, μ, variant), appended as each finishes; rows already
there are skipped on a rerun; `ls_ord_by_margin`: LS_ord per bin of the unedited model's
margin over its runner-up, `evaluate.margin_bins`), `table.md` and `frontier.png` (ES
against LS by μ) in --out.
`--draws K` repeats each N on K disjoint sets of facts (each with its own cached
targets; draw 0 is the one-draw sweep's, so earlier caches and rows count as draw 0), and
table.md and the plot give each setting's mean over its draws — at N = 16 one draw scores
16 neighbourhood prompts (docs/results.md, twentieth session).
`--anchors K --anchor-weight ν` adds subject anchors; `--per-fact` turns off subject
grouping (`value_opt.group_subjects`).
`--oracle-pins W` is an analysis, not a method: the scored neighbourhood prompts join each
solve as zero-value rows of weight W (`MalmenEditor.protect` with `protect_rounds` 0: what
the update could keep of them if it knew them);
`--pool-pins K --pin-pool F` pins each edit's prompt asked of K subjects of training facts F
instead (what an editor could know).
`--lookalike-protect K` protects each edit's prompt asked of K look-alike subjects (another
first word, the subject's last word) with the unedited model's answers, held in rounds as
a deployment's protected prompts are — a list the editor can write for itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import torch
from safetensors.torch import load_file, save_file

from editor_core.anchors import AnchorNames, anchor_pairs
from editor_core.apply import apply_delta, restore, snapshot
from editor_core.checkpoint import checkpoint_layers
from editor_core.config import ModelSpec
from editor_core.data import read_facts, read_locality
from editor_core.data.formats import LocalityPrompt, is_question
from editor_core.editor import MalmenEditor, WeightDelta
from editor_core.evaluate import (
    MARGIN_EDGES,
    last_token_sharing,
    neighbourhood_of,
    paraphrase_requests,
    prepare_locality,
    requests_of,
    same_subject_prompts,
    sample_draws,
    score_edited,
    summarise_draws,
)
from editor_core.gate import GateMode, ScopeGate, gated
from editor_core.loading import load_model
from editor_core.metrics import token_accuracy
from editor_core.optimize import ValueOptConfig
from service.commands.eval import MAX_LOCALITY, sample_pool

log = logging.getLogger("mu_sweep")
METRICS = ("es", "gs", "generation", "ls_ordinary", "ls_neighborhood")


def cached_targets(editor: MalmenEditor, facts: list[Any], path: Path) -> torch.Tensor:
    """Residual targets (F, n_slots, H) of `facts`, from `path` when it holds these facts."""
    ids = [f.id for f in facts]
    if path.exists():
        blob = load_file(str(path))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if meta["ids"] == ids:
            log.info("residual targets of %d facts from %s", len(ids), path)
            return blob["z"]
    t0 = time.perf_counter()
    res = editor.residual_targets(requests_of(facts), progress=True)
    z = res.z.cpu().contiguous()
    save_file({"z": z}, str(path))
    meta = {
        "ids": ids,
        "seconds": time.perf_counter() - t0,
        # what the values cost and reached: Adam steps, final target NLL, ‖δ‖/‖residual‖
        "steps_mean": float(res.steps_taken.float().mean()),
        "nll_mean": float(res.final_loss.float().mean()),
        "delta_ratio_mean": float(res.delta_ratio.float().mean()),
    }
    path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    return z


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--editor", type=Path, help="a values=optimise checkpoint")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--facts", type=Path)
    p.add_argument("--locality", type=Path)
    p.add_argument("--neighborhood", type=Path)
    p.add_argument("--n", default="256", help="edit counts, e.g. 256,1024")
    p.add_argument("--mu", help="μ values, e.g. 3000,12000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="repeat each N on this many disjoint sets of facts (evaluate.sample_draws; "
        "draw 0 is the one-draw sweep's); table.md gives each setting's mean over its draws",
    )
    p.add_argument(
        "--only-draws",
        help="of the --draws sets, run only these (0-based, e.g. 2,3,4: to finish a run whose "
        "first draws were measured elsewhere — the sets are the same whichever are run)",
    )
    p.add_argument(
        "--first",
        type=int,
        default=64,
        help="also score ES of the first K drawn facts: with K = 64 and N = 16·64 this is the "
        "joint-mode criterion (the first batch after 16 re-spread batches is this edit)",
    )
    p.add_argument("--anchors", type=int, default=None, help="subject anchors per edit")
    p.add_argument("--anchor-weight", type=float, default=None, help="weight ν of anchor rows")
    p.add_argument(
        "--upper-tilt",
        type=float,
        default=None,
        help="leave more of each change to the upper edited layers (value_opt.upper_tilt; "
        "0 = MEMIT's equal shares)",
    )
    p.add_argument(
        "--refine",
        type=float,
        default=None,
        help="re-spread once with each target moved past itself by this × the shortfall the "
        "first solve left (value_opt.refine; 0 = one spread)",
    )
    p.add_argument(
        "--anchor-names",
        choices=get_args(AnchorNames),
        default=None,
        help="how anchor names are made (editor_core/anchors.py): a whole other name, or "
        "another first word + the subject's last word",
    )
    p.add_argument(
        "--per-fact",
        action="store_true",
        help="one residual change per fact, as before subject grouping (value_opt.group_subjects)",
    )
    p.add_argument(
        "--preserve-ref-edits",
        type=int,
        default=None,
        help="override the checkpoint's rule μ·max(1, N/ref); 0 = μ fixed",
    )
    p.add_argument(
        "--value-steps",
        type=int,
        default=None,
        help="Adam steps per subject group for the residual targets (value_opt.steps)",
    )
    p.add_argument(
        "--value-lr",
        type=float,
        default=None,
        help="Adam step of the residual targets (value_opt.lr): a smaller one can stop a δ "
        "at the stop loss before it reaches the norm clamp",
    )
    p.add_argument(
        "--essence-weight",
        type=float,
        default=None,
        help="ROME's essence-drift penalty on each value (value_opt.essence_weight; 0 = off)",
    )
    p.add_argument(
        "--essence-prompts",
        default=None,
        help="the essence penalty's prompts, separated by '|', each with {subject} "
        '(value_opt.essence_prompts; default "{subject} is a")',
    )
    p.add_argument(
        "--keep-weight",
        type=float,
        default=None,
        help="the same penalty on each fact's own keep prompts (its subject's other facts; "
        "value_opt.keep_weight; 0 = off)",
    )
    p.add_argument(
        "--lookalike-weight",
        type=float,
        default=None,
        help="the same penalty on look-alike subjects (another first word, the subject's "
        "last word) asked the edit's question (value_opt.lookalike_weight; 0 = off)",
    )
    p.add_argument(
        "--lookalikes",
        type=int,
        default=None,
        help="look-alike prompts per edit (value_opt.lookalikes)",
    )
    p.add_argument(
        "--keep-max",
        type=int,
        default=None,
        help="at most this many keep prompts per fact, the first ones (value_opt.keep_max)",
    )
    p.add_argument(
        "--paraphrase-max",
        type=int,
        default=None,
        help="optimise each value for up to this many of the fact's edit_paraphrases too "
        "(value_opt.paraphrase_max; 0 = off)",
    )
    p.add_argument(
        "--paraphrase-keys",
        type=float,
        default=None,
        help="weight of each sent paraphrase in the spread's mean key and gap "
        "(value_opt.paraphrase_keys; 0 = the contexts alone); the targets are reused",
    )
    p.add_argument(
        "--value-batch",
        type=int,
        default=None,
        help="facts optimised together (value_opt.batch_facts; speed and memory only — a "
        "GPU runs more at once)",
    )
    p.add_argument(
        "--value-stop-loss",
        type=float,
        default=None,
        help="a subject group's Adam steps stop once its mean target NLL is below this "
        "(value_opt.stop_loss): a higher one asks for a smaller residual change",
    )
    p.add_argument(
        "--subject-tokens",
        type=lambda x: tuple(int(t) for t in x.split(",")),
        default=None,
        help="subject tokens the edit is keyed at, e.g. -1,-2 (-1 the last, -2 the one before)",
    )
    p.add_argument(
        "--value-max-norm",
        type=float,
        default=None,
        help="‖δ‖ ≤ this · ‖residual‖ at every N (value_opt.max_norm; turns off the "
        "checkpoint's clamp rule, value_opt.max_norm_ref_edits)",
    )
    p.add_argument(
        "--prefixes",
        default=None,
        help="contexts each edit's value is optimised in, separated by '|' (the empty one "
        "first: 'Here is a fact. |I read this: ' gives three); a context with '{prompt}' is a "
        "frame around the prompt ('Q: {prompt}? A:'); default: value_opt.prefixes",
    )
    p.add_argument(
        "--prior-rank",
        type=int,
        default=None,
        help="keep the checkpoint's prior to its top R directions (KeyPrior.truncated): what "
        "a smaller checkpoint file costs",
    )
    p.add_argument(
        "--hold-rank",
        type=int,
        default=None,
        help="hold the prior's top R directions (hold_rank: the shifts lie in the others, "
        "AlphaEdit's null-space projection); 0 = off; needs --mu's prior",
    )
    p.add_argument(
        "--pin-weight",
        type=float,
        default=None,
        help="template pins (pin_weight): every prompt token of an edit but its subject's "
        "joins each solve as a zero-value row of this weight; 0 = off",
    )
    p.add_argument(
        "--oracle-pins",
        type=float,
        default=0.0,
        help="ANALYSIS, not a method: every token of the scored neighbourhood prompts (with "
        "the continuation scored) joins each solve as a zero-value row of this weight — what "
        "a linear update at these layers could keep of them if it knew the test prompts",
    )
    p.add_argument(
        "--pool-pins",
        type=int,
        default=0,
        help="with --pin-pool: each edit's prompt asked of this many pool subjects of its "
        "relation (with their true answers) joins each solve as zero-value rows, every token",
    )
    p.add_argument("--pool-pin-weight", type=float, default=1000.0)
    p.add_argument(
        "--lookalike-protect",
        type=int,
        default=0,
        help="each edit's prompt asked of this many look-alike subjects (another first word, "
        "the subject's last word: anchors.anchor_pairs) becomes a protected prompt with the "
        "unedited model's own answer, held as protected prompts are (protect_rounds, "
        "protect_margin): only where a solve would change a sure answer token",
    )
    p.add_argument("--pin-pool", type=Path, help="facts to take --pool-pins subjects from")
    p.add_argument(
        "--gate-keys",
        default="contexts",
        choices=("contexts", "rows"),
        help="the gate's keys: each edit's row keys and the keys of its every context and "
        "paraphrase (contexts), or the row keys alone (rows: each a mean over those)",
    )
    p.add_argument(
        "--gate-mode",
        default="each",
        choices=get_args(GateMode),
        help="how the gate's decisions at the edited layers combine (gate.GateMode)",
    )
    p.add_argument(
        "--gate",
        default="",
        help="ANALYSIS, not a weight update: cosine thresholds, e.g. 0.5,0.7,0.9 — each μ's "
        "shifts are also scored through a scope gate (editor_core/gate.py): a module's change acts "
        "at a token only where its key lies within that cosine of a key the edits were "
        "solved at; one solve, one scoring pass per threshold, rows with `gate`",
    )
    p.add_argument("--device", default="auto", help="auto: CUDA when present, else CPU")
    p.add_argument(
        "--dtype",
        default="float32",
        help="model dtype; float32 (default) keeps CUDA runs comparable with the CPU's",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--targets-only",
        action="store_true",
        help="compute and cache the residual targets, score nothing (they depend on the "
        "layers and value_opt only: a later sweep with another prior reuses them)",
    )
    p.add_argument("--report-only", action="store_true", help="redraw table.md and frontier.png")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    if args.report_only:
        write_table(rows_path, args.out / "table.md")
        write_plot(rows_path, args.out / "frontier.png")
        return 0
    needed = ("editor", "facts", "locality", "neighborhood") + (
        () if args.targets_only else ("mu",)
    )
    missing = [a for a in needed if not getattr(args, a)]
    if missing:
        p.error("the following arguments are required: " + ", ".join(f"--{a}" for a in missing))
    wanted = list(range(args.draws))
    if args.only_draws:
        wanted = [int(x) for x in args.only_draws.split(",") if x.strip()]
        if any(d < 0 or d >= args.draws for d in wanted):
            p.error(f"--only-draws {args.only_draws}: each must be in 0..{args.draws - 1}")
    done = set()
    if rows_path.exists():
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done.add(setting_key(r))

    loaded = load_model(
        ModelSpec(
            source=args.model,
            layers=checkpoint_layers(args.editor),
            device=args.device,
            dtype=args.dtype,
        ),
        args.data_dir,
    )
    editor = MalmenEditor.from_checkpoint(args.editor, loaded)
    knobs = {
        "anchors": args.anchors,
        "anchor_weight": args.anchor_weight,
        "anchor_names": args.anchor_names,
    }
    editor.config = replace(editor.config, **{k: v for k, v in knobs.items() if v is not None})
    if args.prior_rank is not None:
        if editor.key_prior is None:
            raise SystemExit(f"{args.editor} has no preservation prior to truncate")
        editor.key_prior = editor.key_prior.truncated(args.prior_rank)
    if args.hold_rank is not None:
        editor.config = replace(editor.config, hold_rank=args.hold_rank)
    if args.pin_weight is not None:
        editor.config = replace(editor.config, pin_weight=args.pin_weight)
    if args.preserve_ref_edits is not None:
        ref = args.preserve_ref_edits or None
        editor.config = replace(editor.config, preserve_ref_edits=ref)
    vo_knobs: dict[str, Any] = {
        "steps": args.value_steps,
        "lr": args.value_lr,
        "batch_facts": args.value_batch,
        "essence_weight": args.essence_weight,
        "keep_weight": args.keep_weight,
        "keep_max": args.keep_max,
        "lookalike_weight": args.lookalike_weight,
        "lookalikes": args.lookalikes,
        "paraphrase_max": args.paraphrase_max,
        "paraphrase_keys": args.paraphrase_keys,
        "max_norm": args.value_max_norm,
        "stop_loss": args.value_stop_loss,
        "upper_tilt": args.upper_tilt,
        "refine": args.refine,
        "subject_tokens": args.subject_tokens,
    }
    if args.essence_prompts is not None:
        vo_knobs["essence_prompts"] = tuple(x for x in args.essence_prompts.split("|") if x)
    if args.prefixes is not None:
        vo_knobs["prefixes"] = ("", *(x for x in args.prefixes.split("|") if x))
    vo = replace(
        editor.config.value_opt,
        group_subjects=not args.per_fact,
        **{k: v for k, v in vo_knobs.items() if v is not None},
    )
    if args.value_max_norm is not None:  # a fixed clamp: no rule
        vo = replace(vo, max_norm_ref_edits=None)
    editor.config = replace(editor.config, value_opt=vo)
    if editor.config.values != "optimise":
        raise SystemExit(
            f"{args.editor} does not optimise its values (values={editor.config.values})"
        )
    facts = read_facts(args.facts)
    pool_facts = read_facts(args.pin_pool) if args.pool_pins else []
    if args.pool_pins and not args.pin_pool:
        p.error("--pool-pins needs --pin-pool (training facts)")
    ordinary = prepare_locality(
        loaded.model,
        loaded.tokenizer,
        sample_pool(read_locality(args.locality), MAX_LOCALITY, args.seed),
    )
    attached = list(dict.fromkeys(p for f in facts for p in f.neighborhood))
    pool = attached or sample_pool(read_locality(args.neighborhood), MAX_LOCALITY, args.seed)
    neighbours = prepare_locality(loaded.model, loaded.tokenizer, pool)
    base = snapshot(loaded.adapter)
    base_cfg = editor.config
    held = args.oracle_pins or (args.pool_pin_weight if args.pool_pins else 0.0)
    if args.lookalike_protect and held:
        p.error("--lookalike-protect is held in rounds; it does not combine with pinned lists")
    if held:  # the extra prompts, held whole (no rounds) in every solve
        base_cfg = replace(base_cfg, protect_weight=held, protect_rounds=0)
        editor.config = base_cfg

    runs: list[tuple[int, int, list[Any]]] = []
    for n in [int(x) for x in args.n.split(",") if x.strip()]:
        sets = sample_draws(facts, n, args.seed, args.draws)
        if not sets:
            raise SystemExit(f"N={n} exceeds the {len(facts)} facts in {args.facts}")
        runs += [(n, draw, chosen) for draw, chosen in enumerate(sets) if draw in wanted]
    gates: list[float | None] = [None] + [float(x) for x in args.gate.split(",") if x.strip()]
    for n, draw, chosen in runs:
        tag = targets_tag(editor.config.value_opt, n)
        name = f"targets_n{n}_seed{args.seed}_{tag.replace(', ', '_').replace(' ', '')}"
        name += f"_draw{draw}" if draw else ""  # draw 0 keeps the one-draw sweep's cache
        z = cached_targets(editor, chosen, args.out / f"{name}.safetensors")
        if args.targets_only:
            continue
        reqs = requests_of(chosen)
        nb = neighbourhood_of(chosen, neighbours)
        same = prepare_locality(loaded.model, loaded.tokenizer, same_subject_prompts(facts, chosen))
        solved: dict[str, Any] = {}
        if args.oracle_pins:  # the scored neighbours, held whole in every solve (protect.py)
            editor.protect(nb.prompts)
        elif args.pool_pins:
            editor.protect(pool_texts(chosen, pool_facts, args.pool_pins, args.seed + draw))
        elif args.lookalike_protect:
            editor.protect(lookalike_texts(reqs, args.lookalike_protect))
        for mu, gate in [(float(x), g) for x in args.mu.split(",") if x.strip() for g in gates]:
            cfg = editor.config
            setting = {
                "n": n,
                "draw": draw,
                "mu": mu,
                "targets": tag,
                "anchors": cfg.anchors,
                "anchor_weight": cfg.anchor_weight,
                "anchor_names": cfg.anchor_names,
                "upper_tilt": cfg.value_opt.upper_tilt,
                "refine": cfg.value_opt.refine,
                "paraphrase_keys": cfg.value_opt.paraphrase_keys,
                "prior_rank": args.prior_rank,
                "hold_rank": cfg.hold_rank,
                "pin_weight": cfg.pin_weight,
                "oracle_pins": args.oracle_pins,
                "pool_pins": f"{args.pool_pins}x{args.pool_pin_weight:g}" if args.pool_pins else 0,
                "lookalike_protect": args.lookalike_protect,
                "gate": gate,
                "gate_mode": args.gate_mode if gate is not None else None,
                "gate_keys": args.gate_keys if gate is not None else None,
            }
            if setting_key(setting) in done:
                log.info("N=%d draw %d μ=%g: already in %s", n, draw, mu, rows_path)
                continue
            editor.config = replace(base_cfg, preserve=mu)
            t0 = time.perf_counter()
            if solved.get("mu") != mu:  # one solve per (draw, μ), scored through each gate
                solved = {"mu": mu, "delta": editor.respread_delta(reqs, z, progress=True)}
            spread_s = time.perf_counter() - t0
            delta = solved["delta"]
            if gate is None:  # the weight update itself
                try:
                    apply_delta(loaded.adapter, WeightDelta(delta.shifts), base)
                    scores = score_all(loaded, chosen, ordinary, nb, same, args.first)
                finally:
                    restore(loaded.adapter, base)
            else:
                contexts = args.gate_keys == "contexts"
                scope = ScopeGate.of_rows(gate, delta.rows, args.gate_mode, contexts)
                with gated(loaded.adapter, delta.shifts, scope):
                    scores = score_all(loaded, chosen, ordinary, nb, same, args.first)
            row = {
                **setting,
                "mu_effective": editor.preserve_weight(n),
                **scores,
                "spread_seconds": spread_s,
                "protected_held": len(editor.last_held),
            }
            log.info("N=%d draw %d μ=%g: %s", n, draw, mu, {k: round(row[k], 3) for k in METRICS})
            with rows_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    if args.targets_only:
        return 0
    write_table(rows_path, args.out / "table.md")
    write_plot(rows_path, args.out / "frontier.png")
    return 0


def score_all(
    loaded: Any, chosen: list[Any], ordinary: Any, nb: Any, same: Any, first: int
) -> dict[str, Any]:
    """`score_edited` on the model as it is now, with ES of the first `first` facts, GS by
    form and ES by last-token sharing."""
    scores = score_edited(
        loaded, chosen, ordinary, nb, same_subject=same, margin_edges=MARGIN_EDGES
    )
    es = token_accuracy(loaded.model, loaded.tokenizer, requests_of(chosen))  # per fact
    scores[f"es_first_{first}"] = sum(es[:first]) / len(es[:first])
    scores.update(gs_by_form(loaded, chosen))
    scores.update(split_by_last_token(chosen, es, loaded.tokenizer))
    return scores


def pool_texts(chosen: list[Any], pool: list[Any], k: int, seed: int) -> list[LocalityPrompt]:
    """For each edit, its prompt asked of `k` subjects of `pool` (training facts) with the
    same relation, each with that subject's true answer: the neighbours an editor could
    know of without the test prompts."""
    by_rel: dict[str, list[Any]] = {}
    for g in pool:
        if g.subject and g.true_answer and g.subject in g.prompt:
            by_rel.setdefault(g.relation, []).append(g)
    rng = random.Random(seed)
    out = []
    for f in chosen:
        if not f.subject or f.subject not in f.prompt:
            continue
        cands = [g for g in by_rel.get(f.relation, []) if g.subject != f.subject]
        for g in rng.sample(cands, min(k, len(cands))):
            out.append(LocalityPrompt(f.prompt.replace(f.subject, g.subject), g.true_answer))
    return out


def lookalike_texts(reqs: list[Any], k: int) -> list[LocalityPrompt]:
    """Each edit's prompt asked of `k` look-alike subjects (its subject's last word after
    another first word), without an answer: the unedited model's own continuation is the
    one to keep."""
    return [
        LocalityPrompt(text)
        for r in reqs
        for text, _ in anchor_pairs(r.prompt, r.subject, k, kind="same_last_word")
    ]


def split_by_last_token(facts: list[Any], es: list[float], tokenizer: Any) -> dict[str, float]:
    """ES (from the per-fact `es`) of the edits whose subject ends in the same token as
    another edited subject's, and of the others, with the first kind's share
    (`last_token_sharing`; `score_edited` splits LS_nb the same way)."""
    edits, _ = last_token_sharing(tokenizer, facts)
    out: dict[str, float] = {"es_shared_token_share": sum(edits) / len(facts)}
    for key, want in (("es_shared_token", True), ("es_own_token", False)):
        xs = [a for a, shared in zip(es, edits, strict=True) if shared == want]
        if xs:
            out[key] = sum(xs) / len(xs)
    return out


def gs_by_form(loaded: Any, facts: list[Any]) -> dict[str, float]:
    """GS over question paraphrases ("Q: … A:") and over the others (statements)."""
    paras = paraphrase_requests(facts)
    acc = token_accuracy(loaded.model, loaded.tokenizer, paras)
    out = {}
    for form, want in (("question", True), ("statement", False)):
        xs = [a for r, a in zip(paras, acc, strict=True) if is_question(r.prompt) == want]
        if xs:
            out[f"gs_{form}"] = sum(xs) / len(xs)
    return out


def targets_tag(vo: ValueOptConfig, n_edits: int | None = None) -> str:
    """Names the residual targets' settings for a solve of `n_edits` edits: cached targets
    and rows are keyed on it (the contexts always: their default changed once, in the ninth
    session; the clamp as it is at this N, so the checkpoint's clamp rule and a fixed clamp
    of the same size name the same targets)."""
    default = ValueOptConfig()
    tag = ("grouped" if vo.group_subjects else "per-fact") + f", {vo.steps} steps"
    clamp = vo.clamp_for(n_edits)
    if clamp != default.max_norm:
        tag += f", max_norm {clamp:g}"
    if vo.lr != default.lr:
        tag += f", lr {vo.lr:g}"
    if vo.essence_weight != default.essence_weight:
        tag += f", essence {vo.essence_weight:g}"
        if vo.essence_prompts != default.essence_prompts:
            tag += f" {zlib.crc32('|'.join(vo.essence_prompts).encode()):08x}"
    if vo.keep_weight != default.keep_weight:
        tag += f", keep {vo.keep_weight:g}" + (
            f" ≤{vo.keep_max}" if vo.keep_max is not None else ""
        )
    if vo.lookalike_weight != default.lookalike_weight:
        tag += f", lookalikes {vo.lookalikes}×{vo.lookalike_weight:g}"
    if vo.paraphrase_max != default.paraphrase_max:
        tag += f", {vo.paraphrase_max} paraphrases"
    if vo.stop_loss != default.stop_loss:
        tag += f", stop {vo.stop_loss:g}"
    if vo.subject_tokens != default.subject_tokens:
        tag += f", subject tokens {','.join(map(str, vo.subject_tokens))}"
    tag += f", {len(vo.prefixes)} prefixes {zlib.crc32('|'.join(vo.prefixes).encode()):08x}"
    return tag


def setting_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a row a different measurement (rows written before a setting existed
    read as its default)."""
    return (
        r["n"],
        r.get("draw", 0),
        r["mu"],
        r.get("targets", "per-fact"),
        r.get("anchors", 0),
        r.get("anchor_weight", 1.0),
        r.get("anchor_names", "other"),
        r.get("upper_tilt", 0.0),
        r.get("refine", 0.0),
        r.get("paraphrase_keys", 0.0),
        r.get("prior_rank"),
        r.get("hold_rank", 0),
        r.get("pin_weight", 0.0),
        r.get("oracle_pins", 0.0),
        r.get("pool_pins", 0),
        r.get("lookalike_protect", 0),
        r.get("gate"),
        r.get("gate_mode") or ("each" if r.get("gate") is not None else None),
        r.get("gate_keys") or ("rows" if r.get("gate") is not None else None),
    )


def _targets(r: dict[str, Any]) -> str:
    """A row's targets and spread: the targets tag, and every spread or solve setting set."""
    tilt = f", tilt {r['upper_tilt']:g}" if r.get("upper_tilt") else ""
    refine = f", refine {r['refine']:g}" if r.get("refine") else ""
    pk = f", paraphrase keys {r['paraphrase_keys']:g}" if r.get("paraphrase_keys") else ""
    hold = f", hold {r['hold_rank']}" if r.get("hold_rank") else ""
    hold += f", pins {r['pin_weight']:g}" if r.get("pin_weight") else ""
    hold += f", ORACLE pins {r['oracle_pins']:g}" if r.get("oracle_pins") else ""
    hold += f", pool pins {r['pool_pins']}" if r.get("pool_pins") else ""
    hold += (
        f", look-alikes protected {r['lookalike_protect']}" if r.get("lookalike_protect") else ""
    )
    if r.get("gate") is not None:
        mode, keys = r.get("gate_mode") or "each", r.get("gate_keys") or "rows"
        hold += f", GATE cos ≥ {r['gate']:g} ({mode}, {keys})"
    rank = f", prior rank {r['prior_rank']}" if r.get("prior_rank") is not None else ""
    return f"{r.get('targets', 'per-fact')}{tilt}{refine}{pk}{hold}{rank}"


def _anchors(r: dict[str, Any]) -> str:
    """A row's anchors: "k (ν)" with how their names are made unless "other"; "0" without."""
    if not r.get("anchors"):
        return "0"
    kind = r.get("anchor_names", "other")
    return f"{r['anchors']} ({r['anchor_weight']:g})" + ("" if kind == "other" else f" {kind}")


def _label(r: dict[str, Any]) -> str:
    anch = f", {_anchors(r)} anchors" if r.get("anchors") else ""
    return _targets(r) + anch


def write_plot(rows_path: Path, out: Path) -> None:
    """ES against LS (ordinary, neighbourhood), one line per (N, variant) through its μ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = mean_over_draws(
        [json.loads(x) for x in rows_path.read_text(encoding="utf-8").splitlines()]
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    lines: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["n"], _label(r)), []).append(r)
    for ax, metric, name in zip(
        axes, ("ls_ordinary", "ls_neighborhood"), ("LS ordinary", "LS neighbourhood"), strict=True
    ):
        for (n, label), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["mu"])
            ax.plot(
                [r[metric] for r in rs], [r["es"] for r in rs], marker="o", label=f"N={n}, {label}"
            )
            for r in rs:
                ax.annotate(
                    f"μ={r['mu']:g}",
                    (r[metric], r["es"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel(name)
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ES")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("malmen-opt: edit success against locality, by μ (validation)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _draws(r: dict[str, Any]) -> str:
    """ " (8 draws)" for a mean over draws 0–7, " (draws 0, 2)" when not the first k."""
    ids = r.get("draw_ids", [0])
    if ids == [0]:
        return ""
    if ids == list(range(len(ids))):
        return f" ({len(ids)} draws)"
    return f" (draws {', '.join(map(str, ids))})"


def _split(r: dict[str, Any], a: str, b: str, share: str) -> str:
    if share not in r:
        return "–"
    return (
        " / ".join(f"{r[k]:.3f}" if r.get(k) is not None else "–" for k in (a, b))
        + f" ({r[share]:.2f})"
    )


def mean_over_draws(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting: its draws' rows through `evaluate.summarise_draws` (numeric
    fields averaged, "spread"), with "draws" (how many) and "draw_ids" (which: compare
    settings on the same draws)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = setting_key(r)
        groups.setdefault(key[:1] + key[2:], []).append(r)
    return [
        {
            **rs[0],  # the setting's text fields
            **summarise_draws(rs),
            "draws": len(rs),
            "draw_ids": sorted(r.get("draw", 0) for r in rs),
        }
        for rs in groups.values()
    ]


def write_table(rows_path: Path, out: Path) -> None:
    rows = [json.loads(x) for x in rows_path.read_text(encoding="utf-8").splitlines()]
    rows = mean_over_draws(rows)
    rows.sort(key=lambda r: (r["n"], r.get("targets", "per-fact"), r["mu"], r.get("anchors", 0)))
    head = "| N (draws) | targets | μ | anchors (ν) | ES | GS | gen | LS_ord | LS_nb | mean(ES, GS, LS_ord, LS_nb) "
    lines = [
        head + "| ES of the first K | GS question / statement "
        "| ES shared / own last token (share) | LS_nb shared / own last token (share) | spread s |",
        "|" + "---|" * 15,
    ]
    for r in rows:
        m4 = sum(r[k] for k in ("es", "gs", "ls_ordinary", "ls_neighborhood")) / 4
        vals = " | ".join(f"{r[k]:.3f}" for k in METRICS)
        first = next(
            (f"{v:.3f} (K={k[9:]})" for k, v in r.items() if k.startswith("es_first_")), "–"
        )
        forms = f"{r['gs_question']:.3f} / {r['gs_statement']:.3f}" if "gs_question" in r else "–"
        es_split = _split(r, "es_shared_token", "es_own_token", "es_shared_token_share")
        nb = _split(r, "ls_nb_shared_token", "ls_nb_own_token", "nb_shared_token_share")
        lines.append(
            f"| {r['n']}{_draws(r)} | {_targets(r)} | {r['mu']:g} | {_anchors(r)} | {vals} | {m4:.3f} | {first} "
            f"| {forms} | {es_split} | {nb} | {r['spread_seconds']:.0f} |"
        )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
