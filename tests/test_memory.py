"""Tests of `tempscale_rag.memory`: the heap is trimmed every so many embedded tokens."""

from __future__ import annotations

import sys

import pytest

from tempscale_rag import TempScaleEncoder, memory
from tempscale_rag.memory import HeapTrimmer, release_free_memory


def test_the_trimmer_trims_after_every_n_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    trimmer = HeapTrimmer(every=100)
    assert [trimmer.account(n) for n in (40, 40, 40, 99, 1, 250)] == [False, False, True, False, True, True]
    assert len(calls) == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_calls_malloc_trim_on_linux() -> None:
    assert release_free_memory() is True


def test_the_encoder_counts_its_tokens(encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(encoder, "_trimmer", HeapTrimmer(every=1))
    encoder.encode(["a first text to embed", "and a second one"])
    encoder.encode_lists(["a third"], query=True)
    assert len(calls) == 2
