"""`factpatch edit`: apply a batch of fact corrections to a model directory, offline."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from service.commands.train import data_dir_for, parse_layers

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="write an edited copy of a model (one MALMEN batch)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="default model or HF dir")
    p.add_argument("--editor", type=Path, required=True, help="editor checkpoint directory")
    p.add_argument(
        "--facts",
        type=Path,
        required=True,
        help='JSONL {"prompt", "target", "subject"?, "paraphrases"?, "keep"?}; a subject-keyed '
        "editor finds a missing subject in the prompt",
    )
    p.add_argument("--out", type=Path, required=True, help="output model directory")
    p.add_argument("--layers", default=None, help="edited layers (must match the editor)")
    p.add_argument("--eta-scale", type=float, default=None, help="edit-time η multiplier")
    p.add_argument("--lambda", dest="lam", type=float, default=None, help="edit-time λ")
    p.add_argument(
        "--protect",
        type=Path,
        default=None,
        help='JSONL {"prompt", "answer"?} of prompts whose answers the edit must keep '
        "(protected prompts: held where the edit would change them)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", type=Path, default=None, help="default: FACTPATCH_DATA_DIR")
    p.set_defaults(func=run)


def read_requests(path: Path) -> list:
    from editor_core.encoding import EditRequest

    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or not obj.get("prompt") or not obj.get("target"):
            raise ValueError(f"{path}:{n}: each line needs non-empty 'prompt' and 'target'")
        lists = {}
        for name in ("paraphrases", "keep"):
            value = obj.get(name) or []
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"{path}:{n}: '{name}' must be a list of strings")
            lists[name] = tuple(value)
        subject = obj.get("subject")
        out.append(
            EditRequest(
                str(obj["prompt"]),
                str(obj["target"]),
                str(subject) if subject else None,
                lists["keep"],
                lists["paraphrases"],
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    from editor_core.apply import apply_delta, snapshot
    from editor_core.checkpoint import checkpoint_layers
    from editor_core.config import ModelSpec
    from editor_core.editor import MalmenEditor
    from editor_core.loading import load_model

    layers = parse_layers(args.layers) or checkpoint_layers(args.editor)
    spec = ModelSpec(source=args.model, layers=layers, device=args.device)
    loaded = load_model(spec, data_dir_for(args.model, args.data_dir))
    overrides: dict = {}
    if args.eta_scale is not None:
        overrides["eta_scale"] = args.eta_scale
    if args.lam is not None:
        overrides["lambda_override"] = args.lam
    editor = MalmenEditor.from_checkpoint(args.editor, loaded, **overrides)
    requests = editor.with_subjects(read_requests(args.facts))
    if args.protect is not None:
        from editor_core.data import read_locality

        editor.protect(read_locality(args.protect), progress=True)  # on the unedited weights
    delta = editor.compute_delta(requests, progress=True)  # minutes with malmen-opt on a CPU
    apply_delta(loaded.adapter, delta, snapshot(loaded.adapter))
    args.out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(args.out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(args.out)
    log.info("%d facts applied; edited model written to %s", len(requests), args.out)
    if editor.protected is not None:
        log.info(
            "%d protected prompts; the solve held %d of them",
            len(editor.protected),
            len(editor.last_held),
        )
    return 0
