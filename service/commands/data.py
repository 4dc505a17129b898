"""`factpatch data`: generate the synthetic splits, convert public datasets, check files.

factpatch data generate --out data/facts [--seed 0] [--train 20000 --val 1000 --test 2000]
                        [--paraphrases 2] [--edit-paraphrases K]
factpatch data convert --format zsre|counterfact IN --out facts.jsonl [--locality-out L]
factpatch data check FILE [--locality]
factpatch data sample-text --model M --out F [--n 2000]   (the model's own prose, for a prior)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate, convert and check fact data sets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    g = dsub.add_parser("generate", help="write synthetic train/val/test facts + locality pools")
    g.add_argument("--out", type=Path, required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=20_000, help="training facts")
    g.add_argument("--val", type=int, default=1_000, help="validation facts")
    g.add_argument("--test", type=int, default=2_000, help="test facts")
    g.add_argument("--paraphrases", type=int, default=2, help="paraphrases per fact")
    g.add_argument(
        "--edit-paraphrases",
        type=int,
        default=None,
        help="training phrasings per fact written as `edit_paraphrases` (the wordings a "
        "client sends with an edit; default: --paraphrases, at most the relation's free ones)",
    )
    g.set_defaults(func=run_generate)

    c = dsub.add_parser("convert", help="convert zsRE (MEND release) or CounterFact (ROME)")
    c.add_argument("input", type=Path)
    c.add_argument("--format", choices=("zsre", "counterfact"), required=True)
    c.add_argument("--out", type=Path, required=True, help="native facts JSONL")
    c.add_argument("--locality-out", type=Path, default=None, help="ordinary locality JSONL")
    c.add_argument("--limit", type=int, default=None)
    c.set_defaults(func=run_convert)

    k = dsub.add_parser("check", help="validate a native facts (or --locality) JSONL file")
    k.add_argument("file", type=Path)
    k.add_argument("--locality", action="store_true")
    k.set_defaults(func=run_check)

    t = dsub.add_parser(
        "sample-text",
        help="ordinary text written by the model itself (locality JSONL), for --prior-locality",
    )
    t.add_argument("--model", default="smollm2-135m-instruct")
    t.add_argument("--data-dir", type=Path, default=None)
    t.add_argument("--out", type=Path, required=True, help="locality JSONL to write")
    t.add_argument("--n", type=int, default=2000, help="passages to sample")
    t.add_argument("--tokens", type=int, default=96, help="new tokens per passage")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.set_defaults(func=run_sample_text)


def run_generate(args: argparse.Namespace) -> int:
    from editor_core.data.generator import GeneratorConfig, generate, write_splits

    config = GeneratorConfig(
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        seed=args.seed,
        n_paraphrases=args.paraphrases,
        n_edit_paraphrases=args.edit_paraphrases,
    )
    out = write_splits(generate(config), args.out, config)
    for name in sorted(out.iterdir()):
        if name.suffix == ".jsonl":
            print(f"{name}  {len(name.read_text(encoding='utf-8').splitlines())} lines")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from editor_core.data.formats import write_facts, write_locality
    from editor_core.data.public import load_counterfact, load_zsre

    loader = load_zsre if args.format == "zsre" else load_counterfact
    facts = loader(args.input, limit=args.limit)
    write_facts(args.out, facts)
    print(f"{args.out}: {len(facts)} facts")
    if args.locality_out is not None:
        pool = [p for f in facts for p in (*f.locality, *f.neighborhood)]
        write_locality(args.locality_out, pool)
        print(f"{args.locality_out}: {len(pool)} locality prompts")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from editor_core.data.formats import FactFormatError, read_facts, read_locality

    try:
        n = len(read_locality(args.file)) if args.locality else len(read_facts(args.file))
    except FactFormatError as exc:
        print(f"invalid: {exc}")
        return 1
    print(f"{args.file}: {n} valid lines")
    return 0


def run_sample_text(args: argparse.Namespace) -> int:
    from editor_core.config import ModelSpec
    from editor_core.data.formats import write_locality
    from editor_core.data.model_text import sample_text
    from editor_core.loading import load_model
    from service.commands.train import data_dir_for

    loaded = load_model(
        ModelSpec(source=args.model, device=args.device), data_dir_for(args.model, args.data_dir)
    )
    texts = sample_text(
        loaded.model,
        loaded.tokenizer,
        args.n,
        max_new_tokens=args.tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    write_locality(args.out, texts)
    print(f"{args.out}: {len(texts)} passages of {args.n} sampled")
    return 0


if __name__ == "__main__":  # `python -m service.commands.data ...` before the CLI lists it
    import sys

    parser = argparse.ArgumentParser(prog="factpatch")
    register(parser.add_subparsers(dest="command", required=True))
    logging.basicConfig(level=logging.INFO)
    namespace = parser.parse_args(sys.argv[1:])
    sys.exit(int(namespace.func(namespace) or 0))
