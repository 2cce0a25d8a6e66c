"""The engine on a CUDA GPU (bf16 by default) gives the CPU's vectors; run with `pytest -m gpu` on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempscale_rag import TempScaleEncoder

from .conftest import MIXED_TEXTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_gpu_matches_cpu(encoder: TempScaleEncoder, dtype: str) -> None:
    gpu = TempScaleEncoder(device="cuda", dtype=dtype, temperature=0.8)
    texts = [*MIXED_TEXTS, "word " * 700]
    ours = gpu.encode(texts)
    reference = encoder.with_config(temperature=0.8).encode(texts)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= (0.999 if dtype == "auto" else 0.99999), cosines
    assert gpu.last_report.truncated_inputs == 1
    assert np.isfinite(ours).all()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() < 4 * 1024**3
