"""Qdrant Edge's search settings: the HNSW candidate list (`hnsw_ef`) a store searches with, and its segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.stores.qdrant.edge import EDGE_HNSW_EF, EdgeStore
from tests.test_store_edge import DIM, records


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "64"])
def test_hnsw_ef_must_be_a_positive_integer(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="hnsw_ef must be an integer >= 1"):
        EdgeStore(dimension=DIM, path=tmp_path, hnsw_ef=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "tempscale").exists(), "a refused store must not create its collections"


def test_hnsw_ef_is_recorded_and_small_segments_are_searched_exactly(tmp_path: Path) -> None:
    with EdgeStore(dimension=DIM, path=tmp_path) as store:
        for i in range(4):
            store.replace_source(f"s{i}.txt", "fp", records(f"s{i}.txt", i))
        assert store.describe()["hnsw_ef"] == EDGE_HNSW_EF
    queries = np.stack([r.vector for i in range(4) for r in records(f"s{i}.txt", i)[:2]])
    with EdgeStore(dimension=DIM, path=tmp_path, read_only=True, exact=True) as exact:
        want = [[(h.id, round(h.score, 5)) for h in hits] for hits in exact.search_many(queries, k=10)]
    with EdgeStore(dimension=DIM, path=tmp_path, read_only=True, hnsw_ef=1) as store:
        assert store.describe()["hnsw_ef"] == 1
        # 32 points stay below Qdrant's indexing threshold: one plain segment, searched exactly whatever the ef.
        assert store.edge.segment_count(store.collection) >= 1
        found = [[(h.id, round(h.score, 5)) for h in hits] for hits in store.search_many(queries, k=10)]
    assert found == want


def test_new_indexes_build_hnsw_with_the_faiss_stores_graph_settings(tmp_path: Path) -> None:
    # m 32 / ef_construct 200 (not Qdrant's 16 / 100): at 1M chunks recall@10 0.98 at ef 128 instead of 0.94.
    import json

    from tempscale_rag.stores import FaissSettings
    from tempscale_rag.stores.qdrant.edge import EDGE_HNSW_EF_CONSTRUCT, EDGE_HNSW_M

    with EdgeStore(dimension=DIM, path=tmp_path):
        pass
    stored = json.loads((tmp_path / "tempscale" / "edge_config.json").read_text(encoding="utf-8"))["hnsw_config"]
    faiss = FaissSettings()
    assert (stored["m"], stored["ef_construct"]) == (EDGE_HNSW_M, EDGE_HNSW_EF_CONSTRUCT)
    assert (faiss.hnsw_m, faiss.hnsw_ef_construction) == (EDGE_HNSW_M, EDGE_HNSW_EF_CONSTRUCT)
    assert faiss.hnsw_ef_search == EDGE_HNSW_EF
