"""Tokenizer worker processes: the same ids as in-process tokenisation, and failures that lose nothing."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

import tempscale_rag.encoder as encoder_module
from tempscale_rag import TempScaleEncoder
from tempscale_rag.tokenizing import IdTokenizer, TokenizerPool, TokenizerPoolError, encode_ids

from .conftest import MIXED_TEXTS

TEXTS = [*MIXED_TEXTS, "", "   ", "naïve café 日本語 🚀", "x " * 2000, "tab\tand\nnewline"] * 9


def in_process_ids(encoder: TempScaleEncoder, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in encoder._m.rust_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def test_workers_give_the_ids_of_this_process(encoder: TempScaleEncoder) -> None:
    reference = in_process_ids(encoder, TEXTS)
    pool = TokenizerPool(encoder._m.rust_tokenizer.to_str(), workers=3)
    try:
        for texts, expected in ((TEXTS, reference), (TEXTS[:1], reference[:1]), ([], [])):
            counts, ids = pool.tokenize(texts)  # 3 slices, 1 slice, nothing
            assert counts.dtype == np.int64 and ids.dtype == np.int32
            assert counts.tolist() == [len(x) for x in expected]
            assert ids.tolist() == list(itertools.chain.from_iterable(expected))
    finally:
        pool.close()
    assert all(proc.poll() is not None for proc in pool._procs)  # close() stops the workers


def test_the_ascii_twin_gives_the_ids_of_the_full_tokenizer(encoder: TempScaleEncoder) -> None:
    """BERT's normaliser without its NFD and CJK passes, on pure-ASCII texts only: the same ids, every ASCII character
    (controls too) and mixed calls included; a tokenizer with another normaliser gets no twin."""
    rng = np.random.default_rng(0)
    noise = ["".join(map(chr, rng.integers(0, 128, 300))) for _ in range(40)]
    texts = [*TEXTS, *noise, "ÉCOLE Straße", "Ａｂｃ 한국어", "plain ascii"]
    ids = IdTokenizer(encoder._m.rust_tokenizer.to_str())
    assert ids.ascii is not None
    for chosen in (texts, [t for t in texts if t.isascii()], [t for t in texts if not t.isascii()]):
        expected = encode_ids(ids.full, chosen)
        got = ids.encode(chosen)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    from tokenizers import Tokenizer, normalizers

    other = Tokenizer.from_str(encoder._m.rust_tokenizer.to_str())
    other.normalizer = normalizers.Lowercase()
    assert IdTokenizer(other.to_str()).ascii is None


def test_a_broken_tokenizer_is_reported_by_the_worker() -> None:
    pool = TokenizerPool("not a tokenizer", workers=1)
    try:
        with pytest.raises(TokenizerPoolError, match=r"tokenizer worker \d+ failed"):
            pool.tokenize(["some text"])
    finally:
        pool.close()


def test_a_dead_worker_falls_back_to_this_process(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker killed between calls: the call still succeeds, with the same vectors, tokenised here."""
    expected = encoder.encode(TEXTS)
    monkeypatch.setattr(encoder_module, "PART_TEXTS", 20)
    monkeypatch.setattr(TempScaleEncoder, "_plan_ahead", lambda self: True)
    monkeypatch.setattr(encoder._m, "_tokenizer_pool_failed", False)  # restored for the tests that follow
    engine = encoder.with_config(tokenize_workers=2)
    np.testing.assert_array_equal(engine.encode(TEXTS), expected)
    pool = engine._m._tokenizer_pool
    assert pool is not None
    for proc in pool._procs:
        proc.kill()
        proc.wait()
    with caplog.at_level(logging.WARNING, logger="tempscale_rag"):
        np.testing.assert_array_equal(engine.encode(TEXTS), expected)
    assert any("tokenizer worker" in r.message for r in caplog.records)
    assert engine._m._tokenizer_pool is None  # not retried on every call
    np.testing.assert_array_equal(engine.encode(TEXTS), expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_text_that_is_not_unicode_is_named(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(encoder_module, "PART_TEXTS", 4)
    monkeypatch.setattr(TempScaleEncoder, "_plan_ahead", lambda self: True)
    engine = encoder.with_config(tokenize_workers=workers)
    texts = ["fine", "also fine", "more", "and more", "fine again", "a stray \udc80 surrogate", "last"]
    with pytest.raises(ValueError, match=r"text at position 5 is not valid Unicode"):
        engine.encode(texts)
