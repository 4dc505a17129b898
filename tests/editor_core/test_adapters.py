from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from editor_core import ARCHITECTURES, ModelSpec, UnknownArchitectureError, load_model
from editor_core.adapters import ModelAdapter
from editor_core.config import resolve_arch
from tests.tiny import TINY_TYPES, save_tiny, tiny_model


@pytest.mark.parametrize("model_type", TINY_TYPES)
def test_adapter_finds_down_projection_with_shape_and_orientation(model_type: str) -> None:
    model = tiny_model(model_type)
    adapter = ModelAdapter(model, resolve_arch(model.config.model_type, ModelSpec()))
    assert adapter.layers == (0, 1)  # 2-layer model: "last 6" clamps to all layers
    cfg = model.config
    hidden = cfg.hidden_size
    inner = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden
    for m in adapter.modules:
        module = adapter.module(m.name)
        assert (m.d_in, m.d_out) == (inner, hidden), m.name
        # The row-convention weight must compute the module: v = u @ W_rows (+ bias).
        u = torch.randn(3, m.d_in)
        bias = getattr(module, "bias", None)
        expected = module(u) - (bias if bias is not None else 0)
        got = u @ adapter.weight_rows(m.name)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        kind = "conv1d" if isinstance(module, Conv1D) else "linear"
        assert adapter.arch.kind == kind


def test_every_registered_architecture_has_a_tiny_test_model() -> None:
    untested = set(ARCHITECTURES) - set(TINY_TYPES) - {"gemma3"}
    assert not untested


def test_explicit_layers_and_range_check() -> None:
    model = tiny_model("llama", layers=4)
    arch = resolve_arch("llama", ModelSpec())
    assert ModelAdapter(model, arch, (2, 1)).layers == (1, 2)
    with pytest.raises(ValueError, match="out of range"):
        ModelAdapter(model, arch, (4,))


def test_unknown_architecture_names_the_config_keys() -> None:
    with pytest.raises(UnknownArchitectureError, match="module_template"):
        resolve_arch("rwkv", ModelSpec())
    arch = resolve_arch(
        "rwkv",
        ModelSpec(
            module_template="blocks.{}.ffn.value", module_kind="linear", layers_path="blocks"
        ),
    )
    assert arch.module_template == "blocks.{}.ffn.value"


def test_load_model_from_local_directory(tmp_path) -> None:
    path = save_tiny(tmp_path / "m", "gpt2")
    loaded = load_model(ModelSpec(source=str(path), device="cpu"))
    assert loaded.adapter.names == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    assert loaded.tokenizer.padding_side == "right"
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_missing_model_directory_is_a_clear_error(tmp_path) -> None:
    from editor_core.loading import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="never downloads"):
        load_model(ModelSpec(source=str(tmp_path / "nope")))
