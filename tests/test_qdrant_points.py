"""The Qdrant point formats (`stores/qdrant/points.py`): ids and document points, computed fast, equal the reference."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tempscale_rag.ranking.candidates import source_groups
from tempscale_rag.ranking.documents import ChunkGroups
from tempscale_rag.stores.qdrant import points


@pytest.mark.parametrize("name", ["", "a", "0123456789abcdef0123456789abcdef", "é ∂ 😀", "source\x00docs/a.md"])
def test_point_ids_are_uuid5_of_the_fixed_namespace(name: str) -> None:
    namespace = uuid.UUID("5b0f6c1e-8d4a-4c55-9a43-7f0e2b6d1c39")
    assert points.point_id(name) == str(uuid.uuid5(namespace, name))
    assert points.source_point_id(name) == str(uuid.uuid5(namespace, "source\x00" + name))
    assert points.document_point_id(name) == str(uuid.uuid5(namespace, "document\x00" + name))


def test_document_points_group_exactly_as_document_ranking_does() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 120))
        sizes = rng.choice([0, 64, 128, 512], n).tolist()
        vectors = rng.standard_normal((n, 24)).astype(np.float32)
        ids = [f"p{i}" for i in range(n)]
        document = points.StoredDocument.from_chunks("s", list(zip(ids, vectors, sizes, strict=True)))
        order = ChunkGroups.build([0] * n, sizes).order.tolist()
        assert document.ids == [ids[i] for i in order]
        assert document.sizes == [sizes[i] for i in order]
        assert np.array_equal(document.vectors, vectors[order])
        reference = source_groups(sizes, vectors)
        assert list(document.group_vectors) == [size for size, _, _ in reference]
        for size, _, mean in reference:
            assert np.array_equal(document.group_vectors[size], mean)  # bit for bit
