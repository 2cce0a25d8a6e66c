"""Retrieval datasets held in memory, and a reader for the BEIR folder layout.

A `RetrievalDataset` is the corpus, the queries and the relevance judgements (qrels) of one retrieval task, keyed by
string ids. `load_beir` reads the layout BEIR and MTEB use (`corpus.jsonl`, `queries.jsonl`, `qrels.tsv` or
`qrels/<split>.tsv`) and rejects malformed input with the file and line at fault.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalDataset:
    """One retrieval task: documents, queries and which documents are relevant to which query.

    Every query has at least one qrels entry and every qrels entry names a known query and document; this is checked
    when the object is built. Documents without any qrels entry are distractors and are kept.

    Attributes:
        name: Short name of the task, used in reports (e.g. `qmsum`, `passkey_4096`).
        corpus: Document id -> the text the model embeds.
        queries: Query id -> query text.
        qrels: Query id -> {document id: graded relevance}; relevance > 0 means relevant (0 or less: judged
            not relevant), as in BEIR, MTEB and trec_eval.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"dataset name must be a non-empty string, got {self.name!r}")
        for what, mapping in (("corpus", self.corpus), ("queries", self.queries)):
            if not isinstance(mapping, dict):
                raise TypeError(f"{what} must be a dict of id -> text, got {type(mapping).__name__}")
            if not mapping:
                raise ValueError(f"dataset {self.name!r} has an empty {what}")
            for key, text in mapping.items():
                if not isinstance(key, str) or not isinstance(text, str):
                    raise TypeError(
                        f"{what} of dataset {self.name!r} must map str ids to str texts; "
                        f"found {type(key).__name__} -> {type(text).__name__} for id {key!r}"
                    )
        if not isinstance(self.qrels, dict):
            raise TypeError(
                f"qrels must be a dict of query id -> {{doc id: relevance}}, got {type(self.qrels).__name__}"
            )
        for qid, judged in self.qrels.items():
            if qid not in self.queries:
                raise ValueError(f"qrels of dataset {self.name!r} name query {qid!r}, which is not in queries")
            if not isinstance(judged, dict) or not judged:
                raise ValueError(f"qrels of query {qid!r} in dataset {self.name!r} must be a non-empty dict")
            for doc_id, relevance in judged.items():
                if doc_id not in self.corpus:
                    raise ValueError(
                        f"qrels of query {qid!r} in dataset {self.name!r} name document {doc_id!r}, "
                        "which is not in the corpus"
                    )
                if isinstance(relevance, bool) or not isinstance(relevance, int):
                    raise TypeError(
                        f"relevance of ({qid!r}, {doc_id!r}) in dataset {self.name!r} must be an int, got {relevance!r}"
                    )
        unjudged = [qid for qid in self.queries if qid not in self.qrels]
        if unjudged:
            raise ValueError(
                f"{len(unjudged)} queries of dataset {self.name!r} have no qrels (first: {unjudged[0]!r}); "
                "drop them, they cannot be scored"
            )

    def relevant_docs(self, query_id: str) -> list[str]:
        """Ids of the documents judged relevant (relevance > 0) to `query_id`, in qrels order."""
        return [doc_id for doc_id, rel in self.qrels[query_id].items() if rel > 0]

    def subset(self, n_queries: int, seed: int = 0, *, max_docs: int | None = None) -> RetrievalDataset:
        """A smaller dataset for quick runs: a seeded random sample of the queries.

        Every document named in the kept queries' qrels is kept. The other documents (distractors) are all kept
        when `max_docs` is None; otherwise a seeded random sample of them fills the corpus up to `max_docs`
        documents in total. Queries and documents keep their original order.

        Args:
            n_queries: How many queries to keep (1 to the number of queries).
            seed: Seed of the sampling; the same seed gives the same subset.
            max_docs: Cap on the size of the subset's corpus, or None for no cap.

        Returns:
            A new `RetrievalDataset` named `<name>[n_queries/seed]`.

        Raises:
            ValueError: If `n_queries` is out of range, or the kept queries alone need more than `max_docs` documents.
        """
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or not 1 <= n_queries <= len(self.queries):
            raise ValueError(f"n_queries must be an int from 1 to {len(self.queries)}, got {n_queries!r}")
        rng = random.Random(f"subset|{seed}")
        kept_set = set(rng.sample(list(self.queries), n_queries))
        kept = [qid for qid in self.queries if qid in kept_set]
        needed = {doc_id for qid in kept for doc_id in self.qrels[qid]}
        if max_docs is None:
            doc_ids = set(self.corpus)
        else:
            if isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1:
                raise ValueError(f"max_docs must be a positive int or None, got {max_docs!r}")
            if len(needed) > max_docs:
                raise ValueError(
                    f"the {n_queries} sampled queries need {len(needed)} documents, more than max_docs={max_docs}; "
                    "raise max_docs or keep fewer queries"
                )
            others = [doc_id for doc_id in self.corpus if doc_id not in needed]
            doc_ids = needed | set(rng.sample(others, min(len(others), max_docs - len(needed))))
        return RetrievalDataset(
            name=f"{self.name}[{n_queries}/{seed}]",
            corpus={doc_id: text for doc_id, text in self.corpus.items() if doc_id in doc_ids},
            queries={qid: self.queries[qid] for qid in kept},
            qrels={qid: dict(self.qrels[qid]) for qid in kept},
        )


def load_beir(folder: str | os.PathLike[str], *, name: str | None = None, split: str | None = None) -> RetrievalDataset:
    """Read a retrieval dataset in BEIR layout.

    Files in `folder`:

    - `corpus.jsonl`: one JSON object per line with `_id`, `text` and optionally `title`. The text embedded is
      `(title + " " + text).strip()` when a title is present and `text.strip()` otherwise, which is what BEIR and
      MTEB 1.x feed the model (MTEB's LongEmbed tasks have no title, so their documents are `text.strip()`).
    - `queries.jsonl`: `_id` and `text` per line; query text is kept verbatim (MTEB does not strip queries).
    - qrels, tab-separated with a header row `query-id corpus-id score`: `qrels.tsv`, or BEIR's `qrels/test.tsv`
      when there is no `qrels.tsv`; `split="dev"` reads `qrels/dev.tsv` instead.

    Queries without any qrels row are dropped, as BEIR's and MTEB's loaders do (the number is logged). Documents
    without qrels are kept as distractors. Blank lines are skipped; ids may be JSON strings or integers.

    Args:
        folder: The dataset folder.
        name: Dataset name; defaults to the folder's name.
        split: None for `qrels.tsv` (else `qrels/test.tsv`); a split name to read `qrels/<split>.tsv`.

    Returns:
        The dataset.

    Raises:
        ValueError: If a file is missing or unreadable, a line is not valid JSON or lacks `_id`/`text`, an id is
            repeated, the qrels header is missing, a qrels row is malformed or names an unknown query or document,
            or the corpus or the judged query set is empty. The message names the file and line.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a directory")
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    if split is None:
        qrels_path = root / "qrels.tsv"
        if not qrels_path.is_file():
            qrels_path = root / "qrels" / "test.tsv"
        missing_qrels = f"{root / 'qrels.tsv'} or {qrels_path}"
    else:
        qrels_path = root / "qrels" / f"{split}.tsv"
        missing_qrels = str(qrels_path)
    for path, what in ((corpus_path, str(corpus_path)), (queries_path, str(queries_path)), (qrels_path, missing_qrels)):
        if not path.is_file():
            raise ValueError(f"{root} is not a BEIR dataset folder: missing {what}")

    corpus: dict[str, str] = {}
    for lineno, record, doc_id in _read_jsonl(corpus_path):
        if doc_id in corpus:
            raise ValueError(f"{corpus_path}:{lineno}: document id {doc_id!r} appears twice")
        text = _string_field(record, "text", corpus_path, lineno)
        title = record.get("title")
        if title is not None and not isinstance(title, str):
            raise ValueError(f"{corpus_path}:{lineno}: 'title' must be a string, got {type(title).__name__}")
        corpus[doc_id] = (title + " " + text).strip() if title is not None else text.strip()
    if not corpus:
        raise ValueError(f"{corpus_path}: the corpus is empty")

    queries: dict[str, str] = {}
    for lineno, record, qid in _read_jsonl(queries_path):
        if qid in queries:
            raise ValueError(f"{queries_path}:{lineno}: query id {qid!r} appears twice")
        queries[qid] = _string_field(record, "text", queries_path, lineno)

    qrels = _read_qrels(qrels_path, corpus, queries)
    dropped = len(queries) - len(qrels)
    if not qrels:
        raise ValueError(f"{qrels_path}: no qrels rows; no query can be scored")
    if dropped:
        logger.info("%s: dropped %d of %d queries that have no qrels", root, dropped, len(queries))
    return RetrievalDataset(
        name=name if name is not None else root.resolve().name,
        corpus=corpus,
        queries={qid: text for qid, text in queries.items() if qid in qrels},
        qrels=qrels,
    )


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline), turning decoding errors into ValueError."""
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Yield (line number, record, `_id` as str) for each non-blank line of a BEIR jsonl file."""
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if "_id" not in record:
            raise ValueError(f"{path}:{lineno}: missing '_id'")
        raw_id = record["_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise ValueError(f"{path}:{lineno}: '_id' must be a non-empty string or an integer, got {raw_id!r}")
        yield lineno, record, str(raw_id)


def _string_field(record: dict[str, Any], field: str, path: Path, lineno: int) -> str:
    if field not in record:
        raise ValueError(f"{path}:{lineno}: missing '{field}'")
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"{path}:{lineno}: '{field}' must be a string, got {type(value).__name__}")
    return value


def _read_qrels(path: Path, corpus: dict[str, str], queries: dict[str, str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    header_seen = False
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(
                f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}; "
                "TREC-style 4-column qrels must be converted"
            )
        qid, doc_id, raw_score = (field.strip() for field in fields)
        if not header_seen:
            header_seen = True
            if _parse_int(raw_score) is not None:
                raise ValueError(
                    f"{path}:{lineno}: missing header row; the first line must be 'query-id<TAB>corpus-id<TAB>score' "
                    "(BEIR skips the first line, so a data row there would be lost)"
                )
            continue
        score = _parse_int(raw_score)
        if score is None:
            raise ValueError(f"{path}:{lineno}: score {raw_score!r} is not an integer")
        if qid not in queries:
            raise ValueError(f"{path}:{lineno}: query id {qid!r} is not in queries.jsonl")
        if doc_id not in corpus:
            raise ValueError(f"{path}:{lineno}: corpus id {doc_id!r} is not in corpus.jsonl")
        judged = qrels.setdefault(qid, {})
        if judged.get(doc_id, score) != score:
            raise ValueError(
                f"{path}:{lineno}: ({qid!r}, {doc_id!r}) was already judged {judged[doc_id]}, now {score}; "
                "keep one row per pair"
            )
        judged[doc_id] = score
    return qrels


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
