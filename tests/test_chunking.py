"""`ChunkingConfig` and `MultiSizeChunker`: every document at every size, each size its own length bucket."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tempscale_rag import TempScaleEncoder
from tempscale_rag.config import (
    BUNDLED_MODEL,
    DEFAULT_CHUNK_SIZES,
    DEFAULT_SIZE_TEMPERATURES,
    ChunkingConfig,
    TempScaleConfig,
    default_overlap,
)
from tempscale_rag.ingest.chunking import MultiSizeChunker, WindowChunker
from tempscale_rag.routing import LengthRouter
from tempscale_rag.stores import make_chunk_id
from tempscale_rag.windows import TokenCounter

TEXT = " ".join(
    f"Sentence number {i} talks about the {['budget', 'remote', 'design', 'lentils'][i % 4]} in some detail."
    for i in range(120)
)


def test_parse_both_spellings() -> None:
    plain = ChunkingConfig.parse("24,48,192,499")
    assert plain.sizes == (24, 48, 192, 499) and plain.temperatures is None
    assert plain.taus == DEFAULT_SIZE_TEMPERATURES
    # Sizes between the defaults take the tau of the largest default size not above them: 1.0 below 192, 0.9 from it.
    assert ChunkingConfig.parse("16,64,128,256").taus == (1.0, 1.0, 1.0, 0.9)
    tuned = ChunkingConfig.parse("64:1.0, 128:0.9, 512:0.7", doc_score="max")
    assert tuned.sizes == (64, 128, 512) and tuned.taus == (1.0, 0.9, 0.7)
    assert tuned.spec() == "64:1,128:0.9,512:0.7"
    assert ChunkingConfig().sizes == DEFAULT_CHUNK_SIZES
    assert [plain.overlap(s) for s in plain.sizes] == [default_overlap(s) for s in plain.sizes] == [3, 6, 24, 32]
    assert ChunkingConfig.parse("64,128", overlap_tokens=4).overlap(128) == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no chunk sizes"),
        ("128,64", "increasing"),
        ("64,64", "distinct"),
        ("64:1.0,128", "for every chunk size or for none"),
        ("64:0", "finite number > 0"),
        ("64:nan", "finite number > 0"),
        ("4", "at least 8"),
        ("sixty", "cannot read chunk size"),
    ],
)
def test_parse_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkingConfig.parse(spec)


def test_validation_of_fields() -> None:
    with pytest.raises(ValueError, match="one per size"):
        ChunkingConfig(sizes=(64, 128), temperatures=(1.0,))
    with pytest.raises(ValueError, match="unknown document score"):
        ChunkingConfig(doc_score="median-of-nothing")
    with pytest.raises(ValueError, match="smaller than the chunk size"):
        ChunkingConfig(sizes=(16,), overlap_tokens=16)
    with pytest.raises(ValueError):
        ChunkingConfig(sizes=(64,), foo=1)  # type: ignore[call-arg]


def test_buckets_are_contiguous_and_valid_for_tempscale_config() -> None:
    chunking = ChunkingConfig.parse("64:1.0,128:0.9,256:0.8")
    buckets = chunking.buckets(2)
    assert [b.tau for b in buckets] == [1.0, 0.9, 0.8]
    assert buckets[0].min_tokens == 0 and buckets[-1].max_tokens is None
    config = TempScaleConfig(buckets=buckets)  # validates contiguity
    router = LengthRouter(config)
    for i, size in enumerate(chunking.sizes):
        # A full chunk (content + specials, even a little over its nominal size) routes to its own size's bucket;
        # one token more than the previous size's full chunk does too.
        assert router.route(size + 2, query=False).tau == buckets[i].tau
        assert router.route(size + 2 + math.ceil(size * 0.02), query=False).tau == buckets[i].tau
    assert router.route(5, query=False).tau == 1.0
    single = ChunkingConfig(sizes=(128,), temperatures=(0.7,)).buckets(2)
    assert len(single) == 1 and single[0].tau == 0.7 and single[0].max_tokens is None


def test_multi_size_chunker_routes_each_full_chunk_to_its_size(encoder: TempScaleEncoder) -> None:
    chunking = ChunkingConfig.parse("64:1.0,128:0.9,256:0.8")
    chunker = MultiSizeChunker(encoder, chunking)
    chunks = chunker.split(TEXT)
    assert {c.size for c in chunks} == {64, 128, 256}
    assert [c.position for c in chunks] == list(range(len(chunks))), "positions unique across sizes"
    assert len({make_chunk_id("doc", c.position, c.text) for c in chunks}) == len(chunks)
    sizes_in_order = [c.size for c in chunks]
    assert sizes_in_order == sorted(sizes_in_order), "smallest size first"
    tuned = encoder.with_config(buckets=chunker.routing_buckets())
    lengths = tuned.count_tokens([c.text for c in chunks])
    tau_of_size = dict(zip(chunking.sizes, chunking.taus, strict=True))
    router = LengthRouter(tuned.config)
    by_size: dict[int, list[int]] = {}
    for chunk, n in zip(chunks, lengths, strict=True):
        by_size.setdefault(chunk.size, []).append(n)
    for size, ns in by_size.items():
        full = ns[:-1]  # every chunk but the document's last one is full
        assert full, size
        assert all(n <= size + 2 + math.ceil(size * 0.02) for n in ns), (size, max(ns))
        assert all(router.route(n, query=False).tau == tau_of_size[size] for n in full if n > size * 0.6), size
    # Each size's chunks cover the whole text.
    for size in chunking.sizes:
        joined = " ".join(c.text for c in chunks if c.size == size)
        assert "Sentence number 119" in joined and "Sentence number 0 " in joined


def test_sizes_must_fit_the_window(encoder: TempScaleEncoder) -> None:
    with pytest.raises(ValueError, match="between 8 and 510 tokens"):
        MultiSizeChunker(encoder, ChunkingConfig.parse("64,1024"))


def test_window_chunker_still_one_size(encoder: TempScaleEncoder) -> None:
    chunker = WindowChunker(encoder, 64, 8)
    chunks = chunker.split(TEXT)
    assert {c.size for c in chunks} == {64} and [c.position for c in chunks] == list(range(len(chunks)))


class _CountingCounter(TokenCounter):
    """A `TokenCounter` that counts its tokenizer calls."""

    calls = 0

    def ids(self, text: str) -> list[int]:
        self.calls += 1
        return super().ids(text)


def _prose_and_code() -> str:
    topics = ["budget", "remote", "design"]
    prose = " ".join(f"Point {i}: the {topics[i % 3]} was discussed at length." for i in range(60))
    code = "\n".join(f"value_{i} = module.function_{i}(argument, key={i})" for i in range(40))
    return f"{prose}\n\n{code}\n\n{prose}"


def test_sizes_share_the_token_counts_and_sentences_of_one_text(encoder: TempScaleEncoder) -> None:
    # Every size's splitter counts the tokens of the same paragraphs and sentences: a four-size split counts each
    # distinct piece once (it used to count each about twice per size), with the same chunks as one size at a time.
    text = _prose_and_code()
    base = TokenCounter.from_encoder(encoder)
    chunking = ChunkingConfig.parse("24,48,192,499")
    counter = _CountingCounter(base.tokenizer, base.window, base.n_special)
    chunks = MultiSizeChunker(counter, chunking).split(text)
    together = counter.calls
    alone = 0
    for size in chunking.sizes:
        single = _CountingCounter(base.tokenizer, base.window, base.n_special)
        one = ChunkingConfig(sizes=(size,), overlap_tokens=chunking.overlap(size))
        assert [c.text for c in MultiSizeChunker(single, one).split(text)] == [c.text for c in chunks if c.size == size]
        alone += single.calls
    assert together * 2 < alone, (together, alone)


def test_the_shared_counts_last_one_split_and_are_per_thread(encoder: TempScaleEncoder) -> None:
    import threading

    chunker = MultiSizeChunker(encoder, ChunkingConfig.parse("24,192"))
    texts = [_prose_and_code(), TEXT, "One sentence only."]
    serial = [chunker.split(t) for t in texts]
    memo = chunker._memo
    assert getattr(memo._local, "tables", None) is None, "nothing is kept between splits"
    results: dict[int, list[object]] = {}

    def work(i: int) -> None:
        results[i] = [chunker.split(texts[j % 3]) for j in range(i, i + 6)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, found in results.items():
        assert found == [serial[j % 3] for j in range(i, i + 6)]
    # A splitter used on its own (LlamaIndex's pipeline) counts without a session and keeps nothing.
    assert WindowChunker(encoder, 64, 8).splitter.split_text(TEXT)


def test_token_counter_from_the_model_folder_equals_the_engines(encoder: TempScaleEncoder) -> None:
    # Chunking in a worker (Ray, the evaluator's pool) loads only the tokenizer; its chunks must be the engine's.
    for options in ({}, {"max_seq_length": 128, "document_prompt": "passage: "}):
        engine = encoder.with_config(**options)
        mine = TokenCounter.from_config(TempScaleConfig(**options))
        theirs = TokenCounter.from_encoder(engine)
        assert (
            (mine.window, mine.n_special)
            == (theirs.window, theirs.n_special)
            == (engine.window, engine.count_tokens([""])[0])
        )
        assert mine.count(TEXT) == theirs.count(TEXT) == engine.count_tokens([TEXT])[0]
        chunking = ChunkingConfig.parse("16,64")
        assert MultiSizeChunker(mine, chunking).split(TEXT) == MultiSizeChunker(engine, chunking).split(TEXT)
    assert TokenCounter.from_model(BUNDLED_MODEL).window == 512  # the full position window, not ST's 256 cap
    assert TokenCounter.from_json(str(theirs.tokenizer_json), 64, 2).ids("Hello world") == theirs.ids("Hello world")


def test_token_counter_rejects_what_cannot_chunk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        TokenCounter.from_model(BUNDLED_MODEL, max_seq_length=1024)
    with pytest.raises(ValueError, match="cannot load the tokenizer"):
        TokenCounter.from_model(str(tmp_path))
    counter = TokenCounter.from_model(BUNDLED_MODEL)
    with pytest.raises(ValueError, match="no room for text"):
        TokenCounter(counter.tokenizer, 2, 2)
    with pytest.raises(TypeError, match="takes a TokenCounter"):
        WindowChunker("all-MiniLM-L6-v2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 8 and 62 tokens"):
        MultiSizeChunker(TokenCounter(counter.tokenizer, 64, 2), ChunkingConfig.parse("64"))


CODE_PROSE = (
    "To parse the command line, create a parser with parser = argparse.ArgumentParser(description='Sum integers') "
    "and then call parser.parse_args(), whose result joins paths with os.path.join(a, b) in the usual way; "
    "the object returned by argparse.ArgumentParser(description='...') holds every argument, and "
    "os.path.join(base, name) returns a str that os.path.exists(path) can check before parser.exit(status) runs."
)
CODE_BLOCK = "\n".join(
    [
        "import argparse, os.path",
        "parser = argparse.ArgumentParser(description='Process some integers.')",
        "parser.add_argument('integers', metavar='N', type=int, nargs='+', help='an integer for the accumulator')",
        "parser.add_argument('--sum', dest='accumulate', action='store_const', const=sum, default=max)",
        "parser.add_argument('--foo', nargs='?', help='foo help')",
        "args = parser.parse_args()",
        "path = os.path.join(args.base, args.name)",
        "print(args.accumulate(args.integers), os.path.exists(path), os.path.getsize(path))",
    ]
)


@pytest.mark.parametrize("sizes", ["24,48", "16"])
def test_chunks_do_not_end_inside_a_dotted_name(encoder: TempScaleEncoder, sizes: str) -> None:
    # Issue 24: the splitter's fallback cut long "sentences" (code) at every dot, so a chunk ended
    # `parser = argparse.` and the next began `ArgumentParser(`. In code, cut at line ends; in prose, at sentence
    # ends; never at the dot of `os.path.join` or `argparse.ArgumentParser`.
    text = "\n\n".join([CODE_PROSE, CODE_BLOCK, CODE_PROSE, CODE_BLOCK])
    chunking = ChunkingConfig.parse(sizes, overlap_tokens=0)
    chunks = MultiSizeChunker(TokenCounter.from_encoder(encoder), chunking).split(text)
    assert len(chunks) > 10, "the sizes must force splits inside the code and the prose"
    cursor: dict[int, int] = {}
    for chunk in chunks:
        start = text.index(chunk.text, cursor.get(chunk.size, 0))  # every chunk is a slice of the text
        cursor[chunk.size] = end = start + len(chunk.text)
        before, after = text[max(0, start - 2) : start], text[end : end + 1]
        assert not (chunk.text[-2:-1].isalnum() and chunk.text.endswith(".") and after.isidentifier()), chunk.text
        assert not (before[-1:] == "." and before[:1].isalnum() and chunk.text[:1].isidentifier()), chunk.text
        # Nor inside any other token where every word fits a chunk (punkt ends a sentence at the `?'` of `nargs='?'`);
        # at 16 tokens `argparse.ArgumentParser(description='...')` is itself longer than a chunk: cut between
        # names (after `(`), never inside one (it was cut between letters).
        assert chunk.size < 24 or after in ("", " ", "\n"), (chunk.text, text[end : end + 20])
        assert not (chunk.text[-1:].isalnum() and after.isalnum()), (chunk.text, text[end : end + 20])
        assert not (chunk.text[-1:] == "." and after.isalnum()), (chunk.text, text[end : end + 20])
    for size in chunking.sizes:
        # Each size still covers the text, code lines whole where they fit.
        same = [c.text for c in chunks if c.size == size]
        assert "".join("".join(same).split()) == "".join(text.split())
        assert size < 24 or any("path = os.path.join(args.base, args.name)" in piece for piece in same)
