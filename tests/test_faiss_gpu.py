"""The FAISS store's GPU search path, run for real: needs a GPU build of faiss (e.g. `faiss-cuda` for CUDA 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.stores import ChunkRecord, FaissSettings
from tempscale_rag.stores.faiss import FaissStore, faiss_gpu_count

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    if faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support here (faiss.get_num_gpus() == 0)")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((20_000, 64), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    folder = tmp_path_factory.mktemp("faiss-gpu")
    with FaissStore(folder, dimension=64, settings=FaissSettings(), create=True, use_gpu=False) as store:
        store.upsert(
            [
                ChunkRecord.create(
                    text=f"chunk {i}", vector=v, source=f"doc{i // 50}", position=i % 50, token_length=1, bucket="0-128"
                )
                for i, v in enumerate(data)
            ]
        )
    return folder, data


def test_gpu_store_search_equals_cpu_search(store_folder: tuple[Path, np.ndarray]) -> None:
    folder, data = store_folder
    queries = data[:200] + 0.05 * np.random.default_rng(1).standard_normal((200, 64), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with (
        FaissStore(folder, read_only=True, use_gpu=False) as cpu,
        FaissStore(folder, read_only=True, use_gpu=True) as gpu,
    ):
        assert gpu.uses_gpu and not cpu.uses_gpu
        expected = cpu.search_many(queries, k=10)
        found = gpu.search_many(queries, k=10)
        # One GPU: a GpuIndexFlat (GpuIndexFlatIP in older wheels); several: IndexReplicas of them.
        kind = type(gpu.gpu_index).__name__
        assert kind in {"GpuIndexFlat", "GpuIndexFlatIP", "IndexReplicas"}, kind
    assert [[h.id for h in q] for q in found] == [[h.id for h in q] for q in expected]
    np.testing.assert_allclose(
        [[h.score for h in q] for q in found], [[h.score for h in q] for q in expected], atol=1e-5
    )


def test_index_moves_to_the_gpu_and_back_unchanged(store_folder: tuple[Path, np.ndarray]) -> None:
    import faiss

    _folder, data = store_folder
    cpu = faiss.IndexFlatIP(data.shape[1])
    cpu.add(data)
    resources = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(resources, 0, cpu)
    assert type(gpu).__name__ in {"GpuIndexFlat", "GpuIndexFlatIP"} and gpu.ntotal == len(data)
    back = faiss.index_gpu_to_cpu(gpu)
    assert isinstance(back, faiss.IndexFlat) and back.metric_type == faiss.METRIC_INNER_PRODUCT  # IndexFlat in 1.14
    np.testing.assert_array_equal(back.reconstruct_n(0, len(data)), data)
    scores, ids = gpu.search(data[:100], 5)
    assert (ids[:, 0] == np.arange(100)).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
