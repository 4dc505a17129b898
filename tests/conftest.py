from __future__ import annotations

import os

import pytest

# Tests run on a 2-core machine beside other CPU-heavy processes: one thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    from tests.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "llama")
