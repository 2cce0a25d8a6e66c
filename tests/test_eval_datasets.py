"""Tests of the BEIR loader and RetrievalDataset: small files written here, plus the shared real data when present."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tempscale_rag.evaluation import RetrievalDataset, load_beir

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

HEADER = "query-id\tcorpus-id\tscore\n"


def write_beir(
    folder: Path,
    corpus: Sequence[object] | str,
    queries: Sequence[object] | str,
    qrels: str,
    qrels_name: str = "qrels.tsv",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        text = rows if isinstance(rows, str) else "".join(json.dumps(row) + "\n" for row in rows)
        (folder / name).write_text(text, encoding="utf-8")
    qrels_path = folder / qrels_name
    qrels_path.parent.mkdir(parents=True, exist_ok=True)
    qrels_path.write_text(qrels, encoding="utf-8")
    return folder


CORPUS = [
    {"_id": "d1", "text": "  first document \n"},
    {"_id": "d2", "title": "Title", "text": "second document"},
    {"_id": 3, "text": "third, a distractor"},
]
QUERIES = [
    {"_id": "q1", "text": " what is first? "},
    {"_id": "q2", "text": "what is second?"},
    {"_id": "q3", "text": "a query without qrels"},
]
QRELS = HEADER + "q1\td1\t1\nq2\td2\t2\nq2\td1\t0\n"


def test_load_beir_reads_texts_ids_and_qrels(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "tiny", CORPUS, QUERIES, QRELS))
    assert ds.name == "tiny"
    assert ds.corpus == {"d1": "first document", "d2": "Title second document", "3": "third, a distractor"}
    assert ds.queries == {"q1": " what is first? ", "q2": "what is second?"}  # queries verbatim, q3 dropped
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
    assert ds.relevant_docs("q2") == ["d2"]


def test_load_beir_qrels_folder_layout(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "a", CORPUS, QUERIES, QRELS, qrels_name="qrels/test.tsv")
    assert load_beir(folder, name="renamed").name == "renamed"
    (folder / "qrels" / "dev.tsv").write_text(HEADER + "q1\td2\t1\n", encoding="utf-8")
    assert load_beir(folder, split="dev").qrels == {"q1": {"d2": 1}}
    with pytest.raises(ValueError, match=r"missing .*qrels/train\.tsv"):
        load_beir(folder, split="train")


def test_load_beir_skips_blank_lines_and_accepts_identical_duplicate_rows(tmp_path: Path) -> None:
    corpus = "\n".join(json.dumps(row) for row in CORPUS) + "\n\n"
    folder = write_beir(tmp_path / "b", corpus, QUERIES, HEADER + "\nq1\td1\t1\nq1\td1\t1\n")
    assert load_beir(folder).qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "message"),
    [
        ('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n', QUERIES, QRELS, r"corpus\.jsonl:2: invalid JSON"),
        ([{"text": "no id"}], QUERIES, QRELS, r"corpus\.jsonl:1: missing '_id'"),
        ([{"_id": "d1"}], QUERIES, QRELS, r"corpus\.jsonl:1: missing 'text'"),
        ([{"_id": "d1", "text": 5}], QUERIES, QRELS, r"corpus\.jsonl:1: 'text' must be a string"),
        ([{"_id": "d1", "text": "a", "title": 1}], QUERIES, QRELS, r"'title' must be a string"),
        ([{"_id": "", "text": "a"}], QUERIES, QRELS, r"corpus\.jsonl:1: '_id' must be"),
        ('["not", "an", "object"]\n', QUERIES, QRELS, r"corpus\.jsonl:1: expected a JSON object"),
        ([*CORPUS, {"_id": "d1", "text": "again"}], QUERIES, QRELS, r"corpus\.jsonl:4: document id 'd1' appears twice"),
        (CORPUS, [*QUERIES, {"_id": "q1", "text": "x"}], QRELS, r"queries\.jsonl:4: query id 'q1' appears twice"),
        ("\n\n", QUERIES, QRELS, r"corpus\.jsonl: the corpus is empty"),
        (CORPUS, QUERIES, "q1\td1\t1\n", r"qrels\.tsv:1: missing header row"),
        (CORPUS, QUERIES, HEADER + "q1 d1 1\n", r"qrels\.tsv:2: expected 3 tab-separated fields"),
        (CORPUS, QUERIES, HEADER + "q1\t0\td1\t1\n", r"qrels\.tsv:2: expected 3 tab-separated fields"),
        (CORPUS, QUERIES, HEADER + "q1\td1\tyes\n", r"qrels\.tsv:2: score 'yes' is not an integer"),
        (CORPUS, QUERIES, HEADER + "q1\td1\t1\nq1\tdX\t1\n", r"qrels\.tsv:3: corpus id 'dX' is not in corpus"),
        (CORPUS, QUERIES, HEADER + "qX\td1\t1\n", r"qrels\.tsv:2: query id 'qX' is not in queries"),
        (CORPUS, QUERIES, HEADER + "q1\td1\t1\nq1\td1\t2\n", r"qrels\.tsv:3: .* already judged 1, now 2"),
        (CORPUS, QUERIES, HEADER, r"no qrels rows"),
    ],
)
def test_load_beir_errors_name_file_and_line(
    tmp_path: Path, corpus: Sequence[object] | str, queries: Sequence[object] | str, qrels: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_beir(write_beir(tmp_path / "bad", corpus, queries, qrels))


def test_load_beir_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_beir(tmp_path / "nowhere")
    folder = write_beir(tmp_path / "c", CORPUS, QUERIES, QRELS)
    (folder / "qrels.tsv").unlink()
    with pytest.raises(ValueError, match=r"missing .*qrels\.tsv or .*qrels/test\.tsv"):
        load_beir(folder)
    (folder / "queries.jsonl").unlink()
    with pytest.raises(ValueError, match=r"missing .*queries\.jsonl"):
        load_beir(folder)


def test_load_beir_rejects_invalid_utf8(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "d", CORPUS, QUERIES, QRELS)
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"queries\.jsonl: not valid UTF-8"):
        load_beir(folder)


def make_dataset(n_queries: int = 20, n_docs: int = 60) -> RetrievalDataset:
    corpus = {f"d{j:02d}": f"document {j}" for j in range(n_docs)}
    queries = {f"q{i:02d}": f"query {i}" for i in range(n_queries)}
    qrels = {f"q{i:02d}": {f"d{i:02d}": 1, f"d{i + 1:02d}": 0} for i in range(n_queries)}
    return RetrievalDataset(name="toy", corpus=corpus, queries=queries, qrels=qrels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qrels": {"qX": {"d1": 1}}}, "not in queries"),
        ({"qrels": {"q1": {"dX": 1}}}, "not in the corpus"),
        ({"qrels": {"q1": {}}}, "non-empty dict"),
        ({"queries": {"q1": "a", "q2": "b"}}, "have no qrels"),
        ({"corpus": {}}, "empty corpus"),
        ({"name": ""}, "name must be"),
    ],
)
def test_dataset_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "x", "corpus": {"d1": "a"}, "queries": {"q1": "b"}, "qrels": {"q1": {"d1": 1}}}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RetrievalDataset(**fields)  # type: ignore[arg-type]


def test_dataset_rejects_non_int_relevance() -> None:
    with pytest.raises(TypeError, match="must be an int"):
        RetrievalDataset(name="x", corpus={"d1": "a"}, queries={"q1": "b"}, qrels={"q1": {"d1": 1.0}})  # type: ignore[dict-item]


def test_subset_keeps_needed_docs_and_is_seeded() -> None:
    ds = make_dataset()
    sub = ds.subset(5, seed=3)
    assert sub == ds.subset(5, seed=3)
    assert len(sub.queries) == 5 and sub.corpus == ds.corpus
    assert list(sub.queries) == [qid for qid in ds.queries if qid in sub.queries]  # original order kept
    capped = ds.subset(5, seed=3, max_docs=12)
    assert capped.queries == sub.queries and len(capped.corpus) == 12
    assert {doc for judged in capped.qrels.values() for doc in judged} <= set(capped.corpus)
    assert list(capped.corpus) == [doc for doc in ds.corpus if doc in capped.corpus]
    assert {tuple(ds.subset(5, seed=s).queries) for s in range(5)} != {tuple(sub.queries)}


@pytest.mark.parametrize(("n_queries", "max_docs"), [(0, None), (21, None), (5, 0), (10, 5)])
def test_subset_errors(n_queries: int, max_docs: int | None) -> None:
    with pytest.raises(ValueError):
        make_dataset().subset(n_queries, max_docs=max_docs)


def shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared data {folder} is not present")
    return folder


def test_qmsum_matches_longembed() -> None:
    ds = load_beir(shared("qmsum"))
    assert (len(ds.corpus), len(ds.queries)) == (197, 1527)
    assert sum(len(judged) for judged in ds.qrels.values()) == 1529
    # MTEB's descriptive stats for LEMBQMSumRetrieval: total characters of documents and of queries.
    assert sum(map(len, ds.corpus.values())) == 10_507_156
    assert sum(map(len, ds.queries.values())) == 661_959
    assert {qid for qid, judged in ds.qrels.items() if len(judged) == 2} == {"Bed005_g0", "Bed013_s3"}
    assert all(rel == 1 for judged in ds.qrels.values() for rel in judged.values())


def test_bamboo_loads() -> None:
    ds = load_beir(shared("bamboo"))
    assert (len(ds.corpus), len(ds.queries)) == (54, 197)
    assert all(len(judged) == 1 for judged in ds.qrels.values())
    assert all(text and text == text.strip() for text in ds.corpus.values())
