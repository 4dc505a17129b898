"""Editor checkpoints: safetensors + JSON, with a sha256 manifest. No pickle anywhere.

A checkpoint directory holds
    editor.safetensors   hyper-network weights, normaliser statistics, η, log λ
    config.json          model type and sizes, edited modules and shapes, hyper-network
                         and editor settings, n_edits trained for, data sha256, metrics, step
    manifest.json        {"files": {name: sha256}} of every other file in the directory
and, when written by the trainer, optimizer.safetensors + trainer_state.json (resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from editor_core.preserve import PRESERVE_FILE, KeyPrior

if TYPE_CHECKING:
    from editor_core.editor import MalmenEditor

log = logging.getLogger(__name__)

EDITOR_FILE = "editor.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted (sha256 mismatch) or does not fit the model."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_manifest(directory: Path) -> None:
    files = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    write_json(directory / MANIFEST_FILE, {"files": {n: sha256_file(directory / n) for n in files}})


def verify_manifest(directory: Path) -> dict[str, str]:
    """Check every file listed in the manifest; returns {name: sha256}."""
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        raise CheckpointError(f"{directory} is not an editor checkpoint: no {MANIFEST_FILE}")
    files: dict[str, str] = json.loads(manifest.read_text())["files"]
    problem = check_files(directory, files)
    if problem:
        raise CheckpointError(f"checkpoint {directory}: {problem}; refusing to load it")
    return files


def check_files(directory: Path, files: dict[str, str]) -> str | None:
    """The first file of `files` ({name: sha256}) that is missing or whose sha256 differs,
    described for an error message; None when all match."""
    for name, expected in files.items():
        path = Path(directory) / name
        if not path.is_file():
            return f"{name} is listed but missing"
        actual = sha256_file(path)
        if actual != expected:
            return f"{name} is corrupted (sha256 {actual[:12]}…, manifest says {expected[:12]}…)"
    return None


def checkpoint_layers(directory: Path) -> tuple[int, ...] | None:
    """The layer indices an editor checkpoint was trained for (from its config.json), or
    None when the directory holds no readable config.  Lets `serve`/`eval` edit the layers
    the editor expects without being told."""
    try:
        cfg = json.loads((Path(directory) / CONFIG_FILE).read_text())
        template, modules = str(cfg["module_template"]), list(cfg["modules"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    head, _, tail = template.partition("{}")
    layers = []
    for name in modules:
        if not (name.startswith(head) and name.endswith(tail)):
            return None
        index = name[len(head) : len(name) - len(tail)]
        if not index.isdigit():
            return None
        layers.append(int(index))
    return tuple(sorted(layers)) or None


def editor_config_json(editor: MalmenEditor, meta: dict[str, Any]) -> dict[str, Any]:
    cfg = editor.model_config
    edited = {n: list(s) for n, s in editor.adapter.shapes().items()}
    editor_fields = {k: v for k, v in asdict(editor.config).items() if k != "hyper"}
    return {
        "format_version": FORMAT_VERSION,
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "module_template": editor.adapter.arch.module_template,
        "modules": edited,
        "hyper": asdict(editor.config.hyper),
        "effective_ranks": (
            {k: n.rank for k, n in editor.nets.nets.items()} if editor.has_hypernet else {}
        ),
        "editor": editor_fields,
        **meta,
    }


def save_editor(directory: Path, editor: MalmenEditor, meta: dict[str, Any]) -> Path:
    """Write editor.safetensors + config.json + manifest.json into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if editor.has_hypernet:
        save_tensors(directory / EDITOR_FILE, dict(editor.nets.state_dict()))
    if editor.key_prior is not None:
        save_tensors(directory / PRESERVE_FILE, editor.key_prior.to_tensors())
    write_json(directory / CONFIG_FILE, editor_config_json(editor, meta))
    write_manifest(directory)
    log.info("editor checkpoint written to %s", directory)
    return directory


def load_editor_state(
    directory: Path,
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any], str, KeyPrior | None]:
    """(state dict, config, sha256 of the checkpoint's main file, preservation prior or
    None), after verifying the manifest.  An editor that optimises its values
    (config editor.values = "optimise") has no editor.safetensors: its state is None and
    the sha256 is that of config.json."""
    directory = Path(directory)
    files = verify_manifest(directory)
    if CONFIG_FILE not in files:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not in the manifest")
    config = json.loads((directory / CONFIG_FILE).read_text())
    optimising = config.get("editor", {}).get("values") == "optimise"
    if EDITOR_FILE not in files and not optimising:
        raise CheckpointError(f"checkpoint {directory}: {EDITOR_FILE} is not in the manifest")
    prior = None
    if PRESERVE_FILE in files:
        prior = KeyPrior.from_tensors(load_file(str(directory / PRESERVE_FILE)))
    if EDITOR_FILE not in files:
        return None, config, files[CONFIG_FILE], prior
    return load_file(str(directory / EDITOR_FILE)), config, files[EDITOR_FILE], prior


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written checkpoint directory into place."""
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


# -- trainer state (resume) ---------------------------------------------------------------
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"


def save_trainer_state(directory: Path, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Adam moments as safetensors, param groups + `state` as JSON (no pickle)."""
    sd = opt.state_dict()
    tensors = {
        f"{idx}.{key}": torch.as_tensor(value)
        for idx, per in sd["state"].items()
        for key, value in per.items()
    }
    save_tensors(directory / OPTIMIZER_FILE, tensors)
    write_json(directory / TRAINER_STATE_FILE, {"param_groups": sd["param_groups"], **state})


def load_trainer_state(
    directory: Path, editor: MalmenEditor, opt: torch.optim.Optimizer
) -> tuple[int, float, list[dict[str, Any]]]:
    """Restore hyper-networks and optimizer from a `last/` checkpoint: (step, best, history)."""
    state, _cfg, sha, _prior = load_editor_state(directory)
    if state is None:
        raise CheckpointError(f"checkpoint {directory} has no hyper-network to resume")
    editor.nets.load_state_dict(state)
    editor.checkpoint_sha256 = sha
    meta = json.loads((directory / TRAINER_STATE_FILE).read_text())
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(directory / OPTIMIZER_FILE)).items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), float(meta["best"]), list(meta["history"])
