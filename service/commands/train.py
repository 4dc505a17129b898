"""`factpatch train`: meta-train a MALMEN editor for one model and layer set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="meta-train a MALMEN editor (hyper-network) for a model")
    p.add_argument("--model", default="smollm2-135m-instruct", help="default model or HF dir")
    p.add_argument("--data", type=Path, required=True, help="training facts, JSONL")
    p.add_argument("--val-data", type=Path, default=None, help="validation facts, JSONL")
    p.add_argument("--n-edits", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rank", type=int, default=512)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lambda-lr", type=float, default=1e-2)
    p.add_argument("--loc-coef", type=float, default=1.0)
    p.add_argument("--layers", default=None, help="edited layers, e.g. 24,25,26; default last 6")
    p.add_argument("--lm-batch-size", type=int, default=32)
    p.add_argument("--val-every", type=int, default=20)
    p.add_argument("--val-n", type=int, default=64)
    p.add_argument("--bf16-frozen", action="store_true", help="bf16 autocast below edited layers")
    p.add_argument(
        "--bf16-all",
        action="store_true",
        help="bf16 autocast for the whole LM in meta-training (editing stays float32)",
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint dir (best/ and last/)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this editor checkpoint's hyper-networks (fine-tuning)",
    )
    p.add_argument(
        "--preserve",
        type=float,
        default=0.0,
        help="weight μ of the preservation prior μ·E[kkᵀ] in the solve; 0 = off",
    )
    p.add_argument(
        "--anchors",
        type=int,
        default=0,
        help="subject anchors per edit in the solve (editor_core/anchors.py); 0 = off",
    )
    p.add_argument("--anchor-weight", type=float, default=1.0, help="weight ν of anchor rows")
    p.add_argument(
        "--key-position",
        choices=("predict", "subject"),
        default="predict",
        help="key edits on the positions predicting the target (MALMEN) or on the subject's "
        "last token (needs facts with a subject; pair with middle layers, e.g. 3-8)",
    )
    p.add_argument(
        "--values",
        choices=("hypernet", "optimise"),
        default="hypernet",
        help="hypernet: meta-train MALMEN's hyper-network; optimise: no training — the editor "
        "optimises each fact's value at edit time (editor_core/optimize.py, keyed at the "
        "subject), and this command only estimates its preservation prior and writes OUT",
    )
    p.add_argument(
        "--lambda", dest="lam", type=float, default=None, help="λ of every module (optimise)"
    )
    p.add_argument(
        "--value-context",
        dest="value_contexts",
        action="append",
        default=None,
        help="(optimise) a context each edit's value is optimised in besides the bare prompt: "
        "a prefix ('Here is a fact. ') or a frame with a {prompt} slot ('Q: {prompt}? A:'); "
        "repeatable; default: value_opt.prefixes (editor_core/optimize.py)",
    )
    p.add_argument(
        "--prior-rank",
        type=int,
        default=None,
        help="rank of the stored prior (default 256; optimise: 1024 with an isotropic tail)",
    )
    p.add_argument(
        "--prior-prompts",
        type=int,
        default=3000,
        help="ordinary prompts (true facts, neighbourhood) for E[kkᵀ]",
    )
    p.add_argument(
        "--prior-locality",
        type=Path,
        action="append",
        default=None,
        help="also estimate E[kkᵀ] over up to --prior-prompts prompts of this locality JSONL "
        "(a training split's ordinary text, e.g. data/facts/locality_train.jsonl, or the "
        "model's own prose from `factpatch data sample-text`); repeatable",
    )
    p.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this")
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument(
        "--neighborhood-fraction",
        type=float,
        default=0.5,
        help="share of locality prompts taken from the neighbourhood pool",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=None, help="default: FACTPATCH_DATA_DIR")
    p.set_defaults(func=run)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(x) for x in text.split(",") if x.strip()) if text else None


def data_dir_for(model: str, data_dir: Path | None) -> Path | None:
    from editor_core.loading import DEFAULT_MODEL

    if data_dir is None and model == DEFAULT_MODEL:
        from service.settings import Settings

        return Settings().data_dir
    return data_dir


def prior_corpus(path: Path, n: int, seed: int) -> list:
    """Ordinary (unedited) prompt/answer pairs from a training file: each fact's prompt
    with its TRUE answer, and its neighbourhood prompts.  Their keys define E[kkᵀ]."""
    import json
    import random

    from editor_core.encoding import EditRequest

    pairs = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj.get("true_answer"):
            pairs.append(EditRequest(obj["prompt"], obj["true_answer"]))
        for nb in obj.get("neighborhood") or []:
            if isinstance(nb, dict) and nb.get("answer"):
                pairs.append(EditRequest(nb["prompt"], nb["answer"]))
    random.Random(seed).shuffle(pairs)
    if not pairs:
        raise SystemExit(f"{path}: no true answers or neighbourhood prompts for the prior")
    return pairs[:n]


def locality_corpus(path: Path, n: int, seed: int) -> list:
    """Up to n ordinary prompts of a locality JSONL as prompt/continuation pairs: its answer
    where it has one, else its own last word (the prior reads every token's key, so how a
    text is split into prompt and target does not matter)."""
    import random

    from editor_core.data import read_locality
    from editor_core.encoding import EditRequest

    pairs = []
    for loc in read_locality(path):
        if loc.answer:
            pairs.append(EditRequest(loc.prompt, loc.answer))
        elif " " in loc.prompt.strip():
            head, last = loc.prompt.strip().rsplit(" ", 1)
            pairs.append(EditRequest(head, last))
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def estimate_prior(
    loaded: Any, args: argparse.Namespace, subject: bool, rank: int, tail: bool
) -> Any:
    """The low-rank E[kkᵀ] of the edited modules over --prior-prompts ordinary pairs (all
    tokens when edits are keyed at the subject)."""
    from editor_core.preserve import key_second_moment, low_rank_prior

    corpus = prior_corpus(args.data, args.prior_prompts, args.seed)
    for path in args.prior_locality or ():
        corpus += locality_corpus(path, args.prior_prompts, args.seed)
    moments = key_second_moment(
        loaded.adapter, loaded.tokenizer, corpus, progress=True, all_positions=subject
    )
    return low_rank_prior(moments, rank, tail)


def write_optimising_editor(loaded: Any, args: argparse.Namespace) -> int:
    """An editor with no hyper-network: config + preservation prior, nothing to train."""
    from editor_core.checkpoint import save_editor, sha256_file
    from editor_core.editor import EditorConfig, MalmenEditor
    from editor_core.optimize import ValueOptConfig

    contexts = [c for c in args.value_contexts or [] if c]
    value_opt = ValueOptConfig(prefixes=("", *contexts)) if contexts else ValueOptConfig()
    config = EditorConfig(
        lm_batch_size=args.lm_batch_size,
        preserve=args.preserve,
        anchors=args.anchors,
        anchor_weight=args.anchor_weight,
        key_position="subject",
        values="optimise",
        lambda_override=args.lam if args.lam is not None else 1.0,
        solve_dtype="float64",  # μ in the thousands: keep the normal equation well resolved
        value_opt=value_opt,
    )
    prior = None
    if args.preserve > 0:
        prior = estimate_prior(loaded, args, True, args.prior_rank or 1024, tail=True)
    editor = MalmenEditor.optimising(loaded, config, prior)
    meta = {"training_data_sha256": sha256_file(args.data), "model": args.model, "steps": 0}
    save_editor(args.out, editor, meta)
    log.info("optimising editor (no hyper-network) written to %s", args.out)
    return 0


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from editor_core.checkpoint import sha256_file
    from editor_core.config import ModelSpec
    from editor_core.editor import EditorConfig, MalmenEditor
    from editor_core.hypernet import HyperConfig
    from editor_core.loading import load_model
    from editor_core.preserve import DEFAULT_PRIOR_RANK
    from editor_core.trainer import MalmenTrainer, TrainConfig, read_train_examples

    torch.manual_seed(args.seed)
    spec = ModelSpec(
        source=args.model, layers=parse_layers(args.layers), device=args.device, dtype="float32"
    )
    loaded = load_model(spec, data_dir_for(args.model, args.data_dir))
    if args.values == "optimise":
        return write_optimising_editor(loaded, args)
    train = read_train_examples(args.data, args.neighborhood_fraction)
    val = read_train_examples(args.val_data, args.neighborhood_fraction) if args.val_data else []
    hyper = HyperConfig(rank=args.rank, n_blocks=args.blocks, lr=args.lr, lambda_lr=args.lambda_lr)
    solve_knobs = {
        "lm_batch_size": args.lm_batch_size,
        "preserve": args.preserve,
        "anchors": args.anchors,
        "anchor_weight": args.anchor_weight,
        "key_position": args.key_position,
    }
    editor_cfg = EditorConfig(hyper=hyper, **solve_knobs)
    if args.init_from:
        editor = MalmenEditor.from_checkpoint(args.init_from, loaded, **solve_knobs)
        editor.config = replace(
            editor.config, hyper=replace(editor.config.hyper, lr=args.lr, lambda_lr=args.lambda_lr)
        )
    else:
        editor = MalmenEditor.random_init(loaded, editor_cfg, seed=args.seed)
    if args.preserve > 0 and editor.key_prior is None:
        subject = args.key_position == "subject"
        editor.key_prior = estimate_prior(
            loaded, args, subject, args.prior_rank or DEFAULT_PRIOR_RANK, tail=False
        )
    cfg = TrainConfig(
        n_edits=args.n_edits,
        steps=args.steps,
        lm_batch_size=args.lm_batch_size,
        lr=args.lr,
        lambda_lr=args.lambda_lr,
        loc_coef=args.loc_coef,
        val_every=args.val_every,
        val_n=args.val_n,
        seed=args.seed,
        out_dir=args.out,
        resume=args.resume,
        bf16_frozen=args.bf16_frozen,
        bf16_all=args.bf16_all,
        device=args.device,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        ckpt_every=args.ckpt_every,
        meta={"training_data_sha256": sha256_file(args.data), "model": args.model},
    )
    result = MalmenTrainer(loaded, editor, train, val, cfg).train()
    log.info(
        "trained %d steps; best validation score %.3f; checkpoints in %s",
        result["step"],
        result["best_score"],
        args.out,
    )
    return 0
