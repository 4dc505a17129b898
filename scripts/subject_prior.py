"""A value-optimising editor whose preservation prior also weighs other subjects' keys.

malmen-opt keys an edit at its subject's last token; a neighbour whose subject ends in the
same token ("Alwina College" beside an edited "Calderon College") has nearly the same key
there and receives about half the edit (docs/results.md, twenty-second session).  The
shipped prior μ·E[kkᵀ] is taken over every token of ordinary text and fact prompts, so
subject tokens are a small share of it.  This script adds β·E[k kᵀ] over the keys at the
last subject token of training facts' subjects (subjects disjoint from validation and test):

    P' = E[kkᵀ]_shipped + β · E[k kᵀ]_subjects

which makes the solve pay for moving any direction that subjects in general share (" College"
as such) and pushes each edit towards what sets its own subject apart — the statistical
form of subject anchors (which name look-alikes one by one).  It writes a copy of the
editor with the new prior (same rank and tail), for `scripts/mu_sweep.py --editor`:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/subject_prior.py \\
        --editor editor_core/checkpoints/smollm2-135m-instruct-optimise \\
        --facts out/facts_ep5/train.jsonl --subjects 4000 --beta 1,4 --out out/subject_prior

β is relative to the traces: β = 1 gives the subject keys the shipped prior's total energy.
The residual targets do not depend on the prior, so a sweep can reuse the shipped run's
cached targets (copy its `targets_*.safetensors` and `.json` into the new --out).
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from editor_core.checkpoint import checkpoint_layers, save_tensors, write_manifest
from editor_core.config import ModelSpec
from editor_core.data import read_facts
from editor_core.encoding import EditRequest
from editor_core.loading import load_model
from editor_core.preserve import PRESERVE_FILE, KeyPrior, key_second_moment, low_rank_prior

log = logging.getLogger("subject_prior")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--editor", type=Path, required=True)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--facts", type=Path, required=True, help="training facts with subjects")
    p.add_argument("--subjects", type=int, default=4000, help="distinct subjects to read")
    p.add_argument("--beta", default="1", help="weights β, e.g. 0.5,2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    prior = KeyPrior.from_tensors(load_file(str(args.editor / PRESERVE_FILE)))
    rank = next(iter(prior.values.values())).shape[0]
    by_subject: dict[str, EditRequest] = {}
    for f in read_facts(args.facts):
        if f.subject and f.subject in f.prompt and f.subject not in by_subject:
            by_subject[f.subject] = EditRequest(f.prompt, f.target, subject=f.subject)
    chosen = list(by_subject.values())
    random.Random(args.seed).shuffle(chosen)
    chosen = chosen[: args.subjects]

    spec = ModelSpec(source=args.model, layers=checkpoint_layers(args.editor), dtype="float32")
    loaded = load_model(spec, args.data_dir)
    subj = key_second_moment(
        loaded.adapter, loaded.tokenizer, chosen, progress=True, key_position="subject"
    )
    for beta in [float(x) for x in args.beta.split(",") if x.strip()]:
        mixed: dict[str, torch.Tensor] = {}
        for name, c in subj.items():
            base = prior.matrix(name)
            scale = beta * float(base.trace() / c.trace())
            mixed[name] = base + scale * c
            log.info("%s: β=%g, subject keys × %.3g", name, beta, scale)
        out = args.out / f"beta{beta:g}"
        shutil.copytree(args.editor, out, dirs_exist_ok=True)
        save_tensors(out / PRESERVE_FILE, low_rank_prior(mixed, rank, tail=True).to_tensors())
        write_manifest(out)
        log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
