"""CUDA checks (`pytest -m gpu` on a machine with a GPU; skipped elsewhere).

The same checks run as `scripts/gpu_checks.py` on a lent H100 (see the README's notes):
bf16 serving dtype, pure compute_delta, the edit lands, bit-exact restore from float32
masters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.editor_core.test_loading import CONVERTED, _require_default_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_gpu_checks_on_the_default_model() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _require_default_model()
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_checks  # type: ignore[import-not-found]

    assert (
        gpu_checks.main(str(CONVERTED), str(ROOT / "editor_core/checkpoints/smollm2-135m-instruct"))
        == 0
    )
