"""Tests of the LongEmbed-style passkey and needle generators."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tempscale_rag.evaluation import (
    LONGEMBED_LENGTHS,
    PASSKEY_FILLER,
    RetrievalDataset,
    make_needle,
    make_passkey,
    read_haystack,
    read_needles,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PASSKEY_SENTENCE = re.compile(
    r"(?P<name>[A-Z][a-z]+ [A-Z][a-z]+)'s pass key is (?P<key>\d{4,5})\. Remember it\. "
    r"(?P=key) is the pass key for (?P=name)\."
)


@pytest.fixture(scope="module")
def passkey() -> dict[int, RetrievalDataset]:
    return make_passkey()


def check_shape(ds: RetrievalDataset, length: int, n_docs: int = 100, n_queries: int = 50) -> None:
    assert len(ds.corpus) == n_docs and len(ds.queries) == n_queries
    assert all(len(judged) == 1 and list(judged.values()) == [1] for judged in ds.qrels.values())
    assert len({doc for judged in ds.qrels.values() for doc in judged}) == n_queries
    assert {len(text.split()) for text in ds.corpus.values()} == {int(0.75 * length)}


def test_passkey_shape_and_recipe(passkey: dict[int, RetrievalDataset]) -> None:
    assert list(passkey) == list(LONGEMBED_LENGTHS)
    filler_words = " ".join([PASSKEY_FILLER] * 2000).split()
    for length, ds in passkey.items():
        assert ds.name == f"passkey_{length}"
        check_shape(ds, length)
        names = []
        for text in ds.corpus.values():
            (match,) = PASSKEY_SENTENCE.finditer(text)
            names.append(match["name"])
            before, after = text[: match.start()], text[match.end() :]
            # Inserted at a sentence boundary: the start, or right after a full stop.
            assert before == "" or before.endswith(". ")
            assert after == "" or after.startswith(" ")
            assert (before + after).split() == filler_words[: len((before + after).split())]
        assert len(set(names)) == len(names)
        for qid, query in ds.queries.items():
            (doc_id,) = ds.qrels[qid]
            name = re.fullmatch(r"what is the passkey for (.+)\?", query)
            assert name is not None
            holders = [d for d, text in ds.corpus.items() if f"{name[1]}'s pass key" in text]
            assert holders == [doc_id]


def test_passkey_positions_spread(passkey: dict[int, RetrievalDataset]) -> None:
    starts = [text.index("'s pass key") / len(text) for text in passkey[4096].corpus.values()]
    assert min(starts) < 0.2 and max(starts) > 0.8


def test_passkey_is_deterministic(passkey: dict[int, RetrievalDataset]) -> None:
    again = make_passkey(seed=0)
    assert again == passkey
    assert make_passkey([512, 256])[256] == passkey[256]  # a length does not depend on the others requested
    other = make_passkey([256], seed=1)[256]
    assert other.corpus != passkey[256].corpus and other.queries != passkey[256].queries


def test_passkey_small_counts() -> None:
    (ds,) = make_passkey([64], n_docs=7, n_queries=3, seed=5).values()
    check_shape(ds, 64, n_docs=7, n_queries=3)
    assert list(ds.corpus) == [f"passkey_64_doc{j}" for j in range(7)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"lengths": []}, "must not be empty"),
        ({"lengths": [256, 0]}, "positive ints"),
        ({"lengths": [256, True]}, "positive ints"),
        ({"lengths": [256, 256]}, "distinct"),
        ({"lengths": [16]}, "too few"),
        ({"n_docs": 0}, "n_docs"),
        ({"n_queries": 101}, "n_queries"),
        ({"n_docs": 2001, "n_queries": 1}, "distinct built-in names"),
    ],
)
def test_passkey_errors(args: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_passkey(**args)  # type: ignore[arg-type]


ESSAYS = {
    "rss.txt": "Start of the feed.",
    "goodtaste.txt": "Taste is real. It can be learned!\nSo learn it.",
    "b.txt": "Bees make honey. They dance? Yes.\n",
    "a.txt": " ".join(f"Essay sentence number {i}." for i in range(400)),
}
FACTS = [(f"The secret colour of box {i} is shade {i}.", f"What is the secret colour of box {i}?") for i in range(12)]


@pytest.fixture
def haystack_files(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "essays"
    folder.mkdir()
    for name, text in ESSAYS.items():
        (folder / name).write_text(text, encoding="utf-8")
    tsv = tmp_path / "needles.tsv"
    tsv.write_text("fact\tquestion\n" + "".join(f"{f}\t{q}\n" for f, q in FACTS), encoding="utf-8")
    return folder, tsv


def test_read_haystack_order(haystack_files: tuple[Path, Path]) -> None:
    folder, _ = haystack_files
    expected = ESSAYS["rss.txt"] + ESSAYS["goodtaste.txt"] + ESSAYS["a.txt"] + ESSAYS["b.txt"]
    assert read_haystack(folder) == expected
    assert read_haystack(folder, haystack_start=()) == "".join(ESSAYS[n] for n in sorted(ESSAYS))


def test_needle_recipe(haystack_files: tuple[Path, Path]) -> None:
    folder, tsv = haystack_files
    haystack = read_haystack(folder)
    datasets = make_needle(folder, tsv, [64, 256], n_docs=10, n_queries=4, seed=2)
    facts = dict(FACTS)
    for length, ds in datasets.items():
        assert ds.name == f"needle_{length}"
        check_shape(ds, length, n_docs=10, n_queries=4)
        used = []
        for text in ds.corpus.values():
            (fact,) = [f for f in facts if f in text]
            used.append(fact)
            start = text.index(fact)
            before, after = text[:start], text[start + len(fact) :]
            assert before == "" or re.search(r"[.!?] $", before)
            # Every document is the same haystack prefix with its fact spliced in.
            rest = before[:-1] + after if before else after[1:]
            assert haystack.startswith(rest)
        assert len(set(used)) == len(used)
        for qid, question in ds.queries.items():
            (doc_id,) = ds.qrels[qid]
            assert facts[next(f for f in facts if f in ds.corpus[doc_id])] == question
    assert make_needle(folder, tsv, [64, 256], n_docs=10, n_queries=4, seed=2) == datasets


def test_read_needles(tmp_path: Path) -> None:
    tsv = tmp_path / "n.tsv"
    tsv.write_text("A fact.\tA question?\r\n\nB fact.\tB question?\n", encoding="utf-8")
    assert read_needles(tsv) == [("A fact.", "A question?"), ("B fact.", "B question?")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("A fact.\tA question?\nonly one field\n", r"n\.tsv:2: expected 'fact<TAB>question'"),
        ("A fact.\tA question?\tthird\n", r"n\.tsv:1: expected"),
        ("A fact.\t \n", r"n\.tsv:1: expected"),
        ("A fact.\tQ1?\nA fact.\tQ2?\n", r"n\.tsv:2: 'A fact\.' already appears on line 1"),
        ("\n\n", "no fact/question pairs"),
    ],
)
def test_read_needles_errors(tmp_path: Path, content: str, message: str) -> None:
    tsv = tmp_path / "n.tsv"
    tsv.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_needles(tsv)


def test_needle_errors(haystack_files: tuple[Path, Path], tmp_path: Path) -> None:
    folder, tsv = haystack_files
    with pytest.raises(ValueError, match="does not exist"):
        make_needle(tmp_path / "missing", tsv, [256])
    with pytest.raises(ValueError, match="does not exist"):
        make_needle(folder, tmp_path / "missing.tsv", [256])
    with pytest.raises(ValueError, match="12 facts but n_docs=13"):
        make_needle(folder, tsv, [256], n_docs=13, n_queries=5)
    with pytest.raises(ValueError, match=r"haystack .* has \d+ words; length 4096 needs"):
        make_needle(folder, tsv, [4096], n_docs=10, n_queries=5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no \.txt files"):
        make_needle(empty, tsv, [256])
    (folder / "rss.txt").unlink()
    with pytest.raises(ValueError, match=r"lacks rss\.txt"):
        make_needle(folder, tsv, [256], n_docs=10, n_queries=5)
    assert len(make_needle(folder, tsv, [256], n_docs=10, n_queries=5, haystack_start=())[256].corpus) == 10


def test_needle_on_shared_essays() -> None:
    essays, needles = SHARED_DATA / "paul_graham_essays" / "txt", SHARED_DATA / "needles" / "needles_100.tsv"
    if not essays.is_dir() or not needles.is_file():
        pytest.skip("shared essays or needles are not present")
    datasets = make_needle(essays, needles)
    assert list(datasets) == list(LONGEMBED_LENGTHS)
    facts = [fact for fact, _ in read_needles(needles)]
    for length, ds in datasets.items():
        check_shape(ds, length)
        for text in ds.corpus.values():
            assert text.startswith("Aaron Swartz created a scraped") or any(text.startswith(f) for f in facts)
