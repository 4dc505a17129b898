"""`factpatch eval`: editors × N simultaneous edits, sequential batches, ES–LS trade-off.

    factpatch eval --model smollm2-135m-instruct --editor runs/editor \\
        --facts data/facts/test.jsonl --locality data/facts/locality_test.jsonl \\
        --neighborhood data/facts/neighborhood_test.jsonl --n 1,16,64,256,1024 \\
        --editors malmen,malmen-ridge,mend,ft --sequential-batches 16 --batch 64 \\
        --preserve 0,100,1000 --out runs/eval [--realworld]

Editors: malmen (the checkpoint as configured; --malmen-preserve overrides its μ),
malmen-ridge (the same checkpoint with μ = 0: the plain MALMEN ridge solve), mend, ft, none.

`--draws K` repeats each N on K disjoint sets of facts (the first is the one a one-draw
run edits) and reports the mean, the spread between draws and, from five draws, a 95 %
bootstrap interval for the mean: a 16-edit run scores 16 facts and 16 neighbourhood
prompts, too few to tell 0.94 from 0.96.

Writes results.json, results.md and PNG plots to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_NS = "1,16,64,256,1024"
MAX_LOCALITY = 256  # locality prompts scored per pool


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate editors: ES, GS, LS, generation, time, memory")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--layers", default=None, help="edited layers, e.g. 24,25,26 (default last 6)")
    p.add_argument(
        "--editor",
        type=Path,
        default=None,
        help="MALMEN checkpoint dir (default: untrained, identity network)",
    )
    p.add_argument("--facts", type=Path, default=None, help="native facts JSONL")
    p.add_argument("--locality", type=Path, default=None, help="ordinary locality JSONL")
    p.add_argument(
        "--neighborhood",
        type=Path,
        default=None,
        help="neighbourhood JSONL (used when facts carry no neighbourhood prompts)",
    )
    p.add_argument(
        "--realworld",
        action="store_true",
        help="also evaluate the shipped real-world edits (+ real-world locality)",
    )
    p.add_argument("--n", default=DEFAULT_NS, help="simultaneous edit counts")
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="repeat each N on this many disjoint sets of facts and report the mean, its "
        "spread and a 95%% interval (from 5 draws); the first set is the one-draw run's",
    )
    p.add_argument(
        "--only-draws",
        type=_ints,
        default=None,
        help="with --draws K: run only these draws (0-based, e.g. 4,5,6,7) — the same facts "
        "as in the whole run, so one run can be split over processes",
    )
    p.add_argument(
        "--editors", default="malmen,mend,ft", help="malmen, malmen-ridge, mend, ft, none"
    )
    p.add_argument(
        "--malmen-preserve",
        type=float,
        default=None,
        help="weight μ of the preservation prior for the malmen editor (default: checkpoint's)",
    )
    p.add_argument(
        "--malmen-eta-scale",
        type=float,
        default=None,
        help="edit-time η multiplier for the malmen editor (default: checkpoint's)",
    )
    p.add_argument(
        "--malmen-anchors",
        type=int,
        default=None,
        help="subject anchors per edit for the malmen editor (default: checkpoint's)",
    )
    p.add_argument(
        "--malmen-anchor-weight",
        type=float,
        default=None,
        help="weight ν of the anchor rows (default: checkpoint's)",
    )
    p.add_argument(
        "--malmen-config",
        type=json.loads,
        default=None,
        help="JSON overrides of the malmen editor's settings, as FACTPATCH_EDITOR_CONFIG "
        """(e.g. '{"value_opt": {"keep_weight": 0.5}}'); applied before the other --malmen-* flags""",
    )
    p.add_argument(
        "--ft-paraphrases",
        type=int,
        default=0,
        help="ft also trains on each edit's first K paraphrases (sent with it; compare with "
        "a malmen editor given --malmen-config '{\"paraphrase_rows\": K}' or "
        '\'{"value_opt": {"paraphrase_max": K}}\')',
    )
    p.add_argument(
        "--malmen-label",
        default="malmen",
        help="name of the malmen editor in the results (e.g. malmen-opt for an --editor "
        "that optimises its values), so runs of two MALMEN editors can be combined",
    )
    p.add_argument(
        "--protect",
        type=Path,
        default=None,
        help="locality JSONL of prompts the MALMEN editors hold in every solve (a "
        "deployment's protected prompts, FACTPATCH_PROTECT); scored as ls_protected, and "
        "the neighbourhood prompts not among them as ls_nb_unprotected",
    )
    p.add_argument(
        "--protect-weight",
        type=float,
        default=None,
        help="weight of each protected row (default: the editor's protect_weight, 1000)",
    )
    p.add_argument(
        "--protect-rounds",
        type=int,
        default=None,
        help="re-solves holding the protected prompts the last solve changed (default: the "
        "editor's protect_rounds, 3); 0 holds every protected prompt in every solve",
    )
    p.add_argument("--sequential-batches", type=int, default=16, help="0 disables")
    p.add_argument("--batch", type=int, default=64, help="edits per sequential batch")
    p.add_argument("--sequential-editors", default="malmen")
    p.add_argument(
        "--sequential-modes",
        default="joint,sequential",
        help="joint (one solve over all edits so far) and/or sequential (batch on batch)",
    )
    p.add_argument(
        "--sequential-full-every",
        type=int,
        default=1,
        help="full metrics every K batches and after the last (0: last only, <0: never); "
        "the first batch's ES is scored after every batch",
    )
    p.add_argument(
        "--sequential-score-at",
        default="",
        help="score only after these batches, e.g. 1,2,4,8,16 (default: every batch; the "
        "last always); a re-spreading editor then spreads only there",
    )
    p.add_argument("--tradeoff-n", type=int, default=64, help="0 disables the trade-off sweep")
    p.add_argument("--eta-scale", default="0.25,0.5,1,2", help="η scales for the trade-off")
    p.add_argument("--lambda", dest="lambdas", default="1,10,100,1000", help="λ for the trade-off")
    p.add_argument(
        "--preserve",
        dest="preserves",
        default="",
        help="preservation-prior weights μ for the trade-off (η × 1, the editor's λ)",
    )
    p.add_argument("--max-locality", type=int, default=MAX_LOCALITY)
    p.add_argument("--batch-size", type=int, default=32, help="LM batch size for scoring")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def sample_pool(items: list[Any], n: int, seed: int) -> list[Any]:
    return items if len(items) <= n else random.Random(seed).sample(items, n)


def build_editors(
    loaded: Any, args: argparse.Namespace, protected: Any = None
) -> tuple[dict[str, Any], Any]:
    """{name: editor} for --editors, and a factory (η scale, λ, μ) -> MALMEN editor.

    The factory's None means the editor's own value, except μ: None there means
    --malmen-preserve when given, else the checkpoint's.  `protected` (a
    `protect.ProtectedSet`, read once on the base weights): every MALMEN editor holds it."""
    from editor_core.baselines import FTConfig, FTEditor, MendEditor
    from editor_core.editor import EditorConfig, MalmenEditor, config_fields
    from editor_core.evaluate import with_overrides

    def malmen(eta: float | None = None, lam: float | None = None, mu: float | None = None) -> Any:
        overrides = args.malmen_config or {}
        if args.editor is None:
            log.warning("no --editor checkpoint: MALMEN uses an untrained (identity) network")
            ed = MalmenEditor.random_init(loaded, config=EditorConfig(**config_fields(overrides)))
        else:
            ed = MalmenEditor.from_checkpoint(args.editor, loaded, **overrides)
        knobs = (
            ("anchors", args.malmen_anchors),
            ("anchor_weight", args.malmen_anchor_weight),
            ("protect_weight", args.protect_weight),
            ("protect_rounds", args.protect_rounds),
        )
        ed.config = replace(ed.config, **{k: v for k, v in knobs if v is not None})
        if protected is not None:
            ed.protect(protected, progress=True)
        return with_overrides(
            ed,
            eta if eta is not None else args.malmen_eta_scale,
            lam,
            mu if mu is not None else args.malmen_preserve,
        )

    editors: dict[str, Any] = {}
    for name in [e.strip() for e in args.editors.split(",") if e.strip()]:
        if name == "malmen":
            editors[name] = malmen()
        elif name == "malmen-ridge":
            ridge = malmen(mu=0.0)
            ridge.config = replace(ridge.config, anchors=0)
            editors[name] = ridge
        elif name == "mend":
            editors[name] = MendEditor(malmen())
        elif name == "ft":
            ft = FTConfig(paraphrases=args.ft_paraphrases)
            editors[name] = FTEditor(loaded.adapter, loaded.tokenizer, ft)
        elif name == "none":
            editors[name] = NoEdit()
        else:
            raise SystemExit(f"unknown editor {name!r} (malmen, malmen-ridge, mend, ft, none)")
    return editors, malmen


class NoEdit:
    """The unedited model, as an editor: the reference row of every table."""

    def compute_delta(self, requests: Any, progress: bool = False) -> Any:
        from editor_core.editor import WeightDelta

        return WeightDelta(shifts={})


def evaluate_set(
    loaded: Any,
    editors: dict[str, Any],
    make_malmen: Any,
    facts: list[Any],
    ordinary: list[Any],
    neighbours: list[Any],
    args: argparse.Namespace,
    held: Any = None,
) -> dict[str, Any]:
    from editor_core.evaluate import prepare_locality
    from editor_core.sweeps import run_sequential, run_simultaneous, run_tradeoff

    attached = [p for f in facts for p in f.neighborhood]
    nb_prompts = (
        list(dict.fromkeys(attached))
        if attached
        else sample_pool(neighbours, args.max_locality, args.seed)
    )
    ordinary_set = prepare_locality(
        loaded.model, loaded.tokenizer, sample_pool(ordinary, args.max_locality, args.seed)
    )
    nb_set = prepare_locality(loaded.model, loaded.tokenizer, nb_prompts)
    protected = held.record if held is not None else None  # the base model's answers
    ns = _ints(args.n)
    out: dict[str, Any] = {
        "n_facts": len(facts),
        "n_ordinary": len(ordinary_set),
        "n_neighborhood": len(nb_set),
        "n_protected": len(protected) if protected is not None else 0,
    }
    out["simultaneous"] = run_simultaneous(
        loaded,
        editors,
        facts,
        ns,
        ordinary_set,
        nb_set,
        args.seed,
        args.batch_size,
        draws=args.draws,
        protected=protected,
        only_draws=args.only_draws,
    )
    out["sequential"] = {}
    if args.sequential_batches > 0:
        for name in [e.strip() for e in args.sequential_editors.split(",") if e.strip()]:
            if name not in editors:
                continue
            wanted = [m.strip() for m in args.sequential_modes.split(",") if m.strip()]
            modes = [
                m for m in wanted if m == "sequential" or hasattr(editors[name], "compute_rows")
            ]
            for mode in modes:
                out["sequential"][f"{name}/{mode}"] = run_sequential(
                    loaded,
                    editors[name],
                    mode,
                    facts,
                    args.sequential_batches,
                    args.batch,
                    ordinary_set,
                    nb_set,
                    args.seed,
                    args.batch_size,
                    full_every=args.sequential_full_every,
                    score_at=_ints(args.sequential_score_at) or None,
                    protected=protected,
                )
    out["tradeoff"] = []
    if args.tradeoff_n > 0 and args.malmen_label in editors:
        out["tradeoff"] = run_tradeoff(
            loaded,
            make_malmen,
            facts,
            args.tradeoff_n,
            _floats(args.eta_scale),
            _floats(args.lambdas),
            ordinary_set,
            nb_set,
            args.seed,
            args.batch_size,
            preserves=_floats(args.preserves),
        )
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from editor_core.config import ModelSpec
    from editor_core.data import read_facts, read_locality, realworld_facts, realworld_locality
    from editor_core.loading import load_model

    torch.manual_seed(args.seed)
    from editor_core.checkpoint import checkpoint_layers

    layers = tuple(_ints(args.layers)) if args.layers else None
    if layers is None and args.editor is not None:
        layers = checkpoint_layers(args.editor)  # the layers the editor was trained for
    loaded = load_model(
        ModelSpec(source=args.model, layers=layers, device=args.device, dtype=args.dtype),
        args.data_dir,
    )
    held = None
    if args.protect is not None:
        from editor_core.protect import protected_set

        held = protected_set(
            loaded.model, loaded.tokenizer, read_locality(args.protect), adapter=loaded.adapter
        )
    editors, make_malmen = build_editors(loaded, args, held)
    label = args.malmen_label
    if label != "malmen" and "malmen" in editors:
        editors = {label if k == "malmen" else k: v for k, v in editors.items()}
        args.sequential_editors = ",".join(
            label if e.strip() == "malmen" else e for e in args.sequential_editors.split(",")
        )
    args.out.mkdir(parents=True, exist_ok=True)
    malmen_cfg = getattr(editors.get(label), "config", None)
    results: dict[str, Any] = {
        "meta": {
            "model": args.model,
            "editor": str(args.editor) if args.editor else None,
            "editor_sha256": getattr(editors.get(label), "checkpoint_sha256", None),
            "malmen_label": label,
            "malmen_config": args.malmen_config,
            "ft_paraphrases": args.ft_paraphrases,
            **{
                f"malmen_{knob}": getattr(malmen_cfg, knob, None)
                for knob in (
                    "preserve",
                    "eta_scale",
                    "anchors",
                    "anchor_weight",
                    "values",
                    "key_position",
                    "lambda_override",
                    "protect_weight",
                    "protect_rounds",
                )
            },
            "protect": str(args.protect) if args.protect else None,
            "protect_sha256": held.sha256 if held is not None else None,
            "editors": list(editors),
            # every editor, ft and mend included, changes these layers' matrices only
            "edited_layers": list(loaded.adapter.layers),
            "seed": args.seed,
            "n": _ints(args.n),
            "draws": args.draws,
            "only_draws": args.only_draws,
            "device": str(next(loaded.model.parameters()).device),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    }
    sets: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    if args.facts is not None:
        sets["facts"] = (
            read_facts(args.facts),
            read_locality(args.locality) if args.locality else realworld_locality(),
            read_locality(args.neighborhood) if args.neighborhood else [],
        )
    if args.realworld:
        sets["realworld"] = (realworld_facts(), realworld_locality(), [])
    if not sets:
        raise SystemExit("nothing to evaluate: give --facts and/or --realworld")
    for name, (facts, ordinary, neighbours) in sets.items():
        log.info("evaluating %s: %d facts", name, len(facts))
        res = evaluate_set(loaded, editors, make_malmen, facts, ordinary, neighbours, args, held)
        results[name] = res
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(write_report(results, args.out))
    return 0


def write_report(results: dict[str, Any], out: Path) -> str:
    """PNG plots per set and results.md in `out`; returns the markdown."""
    from editor_core.evaluate import TARGETS
    from editor_core.plots import plot_sequential, plot_tradeoff, plot_vs_n

    out.mkdir(parents=True, exist_ok=True)
    for name in ("facts", "realworld"):
        res = results.get(name)
        if res is None:
            continue
        plot_vs_n(res["simultaneous"], out / f"{name}_vs_n.png", title=name, targets=TARGETS)
        if res["sequential"]:
            plot_sequential(res["sequential"], out / f"{name}_sequential.png")
        if res["tradeoff"]:
            plot_tradeoff(res["tradeoff"], out / f"{name}_tradeoff.png")
    markdown = write_markdown(results)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    return markdown


# -- report -------------------------------------------------------------------------------
_MORE_COLUMNS = (  # after evaluate.SPREAD_METRICS
    "ls_nb_shared_token",
    "ls_nb_own_token",
    "ls_nb_known",
    "ls_same_subject",
    "ls_protected",
    "ls_nb_unprotected",
    "ls_gold_ordinary",
    "ls_gold_neighborhood",
    "edit_seconds",
    "peak_rss_mb",
)


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


def _layers(layers: list[int] | None) -> str:
    """The layers as "2–10" when contiguous, else listed; "–" when unknown (older results)."""
    if not layers:
        return "–"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ", ".join(map(str, layers))


def _mark(value: float | None, target: float, met: bool, ci: list[float] | None = None) -> str:
    """ "0.958 ✓", or "0.786 ✗ (≥ 0.80)" for a missed target; with the 95 % interval of a
    mean over draws, "0.944 ✗ (≥ 0.95; 95 % CI 0.931–0.957)"."""
    interval = f"95 % CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else ""
    if met:
        return f"{_cell(value)} ✓" + (f" ({interval})" if ci else "")
    return f"{_cell(value)} ✗ (≥ {target:.2f}" + (f"; {interval})" if ci else ")")


def _ci(m: dict[str, Any], metric: str) -> list[float] | None:
    ci: list[float] | None = m.get("spread", {}).get(metric, {}).get("ci95")
    return ci


def _spread_lines(res: dict[str, Any]) -> list[str]:
    """A table of each metric's spread over draws, for the runs that repeated an N."""
    from editor_core.evaluate import MIN_DRAWS_FOR_CI, SPREAD_METRICS

    rows = []
    for editor, by_n in res["simultaneous"].items():
        for n, m in by_n.items():
            spread = m.get("spread")
            if not spread:
                continue
            cells: list[str | None] = []
            for metric in SPREAD_METRICS:
                s = spread.get(metric)
                if s is None:
                    cells.append(None)
                    continue
                ci = s.get("ci95")
                text = f"{m[metric]:.3f} ± {s['sd']:.3f}"
                cells.append(text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
            rows.append([editor, n, m["n_draws"], *cells])
    if not rows:
        return []
    return [
        "",
        "### Spread over draws",
        "",
        *_table(["editor", "N", "draws", *SPREAD_METRICS], rows),
        "",
        "Each cell: the mean over draws of N disjoint facts ± the standard deviation between "
        f"draws, and from {MIN_DRAWS_FOR_CI} draws [a 95 % percentile-bootstrap interval for "
        "the mean, resampling whole draws].",
    ]


def _target_lines(res: dict[str, Any]) -> list[str]:
    """The simultaneous runs at a targeted N, each metric marked met or missed, and each
    sequential run's first-batch ES after the targeted batch; [] when none was run."""
    from editor_core.evaluate import SEQUENTIAL_TARGET, TARGETS, against_targets

    cols = list(next(iter(TARGETS.values())))
    rows = []
    for editor, by_n in res["simultaneous"].items():
        for n, m in by_n.items():
            checks = {} if "skipped" in m else against_targets(m, int(n))
            if checks:
                rows.append([editor, n] + [_mark(*checks[c], _ci(m, c)) for c in cols])
    batches, least = SEQUENTIAL_TARGET
    seq = []
    for run_name, history in res["sequential"].items():
        after = next((h for h in history if h.get("batch") == batches), None)
        if after is not None:
            es = after["es_first_batch"]
            seq.append(f"- {run_name}: {_mark(es, least, es >= least)}")
    if not rows and not seq:
        return []
    lines = ["", "### Against the targets", ""]
    if rows:
        lines += _table(["editor", "N", *cols], rows)
    if seq:
        lines += ["", f"The first batch's ES after batch {batches} (target ≥ {least}):", *seq]
    return lines


def write_markdown(results: dict[str, Any]) -> str:
    from editor_core.evaluate import SPREAD_METRICS

    columns = (*SPREAD_METRICS, *_MORE_COLUMNS)
    meta = results["meta"]
    lines = [
        f"# factpatch eval: {meta['model']}",
        "",
        f"editor checkpoint: {meta['editor']} (sha256 {meta.get('editor_sha256')}); "
        f"malmen μ = {meta.get('malmen_preserve')}, η × {meta.get('malmen_eta_scale')}, "
        f"anchors {meta.get('malmen_anchors')} (ν = {meta.get('malmen_anchor_weight')}); "
        f"device {meta['device']}; seed {meta['seed']}",
        "",
        f"edited layers (every editor, ft and mend included): {_layers(meta.get('edited_layers'))}",
    ]
    for name in ("facts", "realworld"):
        res = results.get(name)
        if res is None:
            continue
        lines += [
            "",
            f"## {name}: {res['n_facts']} facts, {res['n_ordinary']} ordinary and "
            f"{res['n_neighborhood']} neighbourhood locality prompts",
            "",
            "### N simultaneous edits",
            "",
        ]
        rows = []
        for editor, by_n in res["simultaneous"].items():
            for n, m in by_n.items():
                if "skipped" in m:
                    rows.append([editor, n, None, m["skipped"]] + [None] * (len(columns) - 1))
                else:
                    rows.append([editor, n, m.get("n_draws", 1)] + [m.get(c) for c in columns])
        lines += _table(["editor", "N", "draws", *columns], rows)
        lines += [
            "",
            "ls_nb_shared_token / ls_nb_own_token: LS on the neighbourhood prompts whose subject "
            "ends in the same token as an edited subject (where a subject-keyed edit is read) / "
            "on the others. ls_nb_known: LS on the neighbourhood prompts whose gold answer the "
            "unedited model gave (facts about other subjects it knew). ls_same_subject: LS on "
            "the set's unedited facts about an edited subject (its other relations). "
            "ls_ordinary_sure / ls_neighborhood_sure: LS over the scored positions where the "
            "unedited model was sure of its token (≥ 1 nat above the runner-up; the rest are "
            "near-ties, which any weight change can flip).",
        ]
        if res.get("n_protected"):
            lines += [
                "",
                f"ls_protected: LS on the {res['n_protected']} prompts the MALMEN editors were "
                f"told to hold ({meta.get('protect')}, weight {meta.get('malmen_protect_weight')}"
                "); ls_nb_unprotected: LS on the neighbourhood prompts not among them.",
            ]
        lines += _spread_lines(res)
        lines += _target_lines(res)
        for run_name, history in res["sequential"].items():
            cols = ["edits", "es", "gs", "ls_ordinary", "ls_neighborhood", "es_first_batch"]
            if res.get("n_protected"):
                cols.insert(-1, "ls_protected")
            lines += ["", f"### sequential: {run_name}", ""]
            lines += _table(cols, [[h.get(c) for c in cols] for h in history])
        if res["tradeoff"]:
            cols = [
                "knob",
                "eta_scale",
                "lambda",
                "preserve",
                "es",
                "gs",
                "ls_ordinary",
                "ls_neighborhood",
            ]
            lines += ["", "### ES–LS trade-off (edit-time knobs)", ""]
            lines += _table(cols, [[t.get(c) for c in cols] for t in res["tradeoff"]])
    return "\n".join(lines) + "\n"
