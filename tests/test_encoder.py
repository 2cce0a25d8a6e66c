"""The engine on the real bundled model: congruence with sentence-transformers, bucketing, truncation, bad input."""

from __future__ import annotations

import gc
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import tempscale_rag.encoder as encoder_module
from tempscale_rag import Bucket, TempScaleEncoder
from tempscale_rag.encoder import padded_length
from tempscale_rag.models import bundled_model_path
from tempscale_rag.planning import TokenizedTexts
from tempscale_rag.tokenizing import TokenizerPool, tokenize_texts

from .conftest import MIXED_TEXTS

LONG = "Industrial designer: the case could be made of titanium or rubber, and the buttons of plastic. " * 60


def test_tau_one_matches_sentence_transformers(encoder: TempScaleEncoder) -> None:
    st = SentenceTransformer(bundled_model_path(), device="cpu")
    st.max_seq_length = 512
    texts = [*MIXED_TEXTS, LONG]
    ours = encoder.with_config(temperature=1.0).encode(texts)
    theirs = st.encode(texts, normalize_embeddings=True, batch_size=3)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_default_window_is_the_full_position_window(encoder: TempScaleEncoder) -> None:
    assert encoder.window == 512  # sentence-transformers caps all-MiniLM-L6-v2 at 256
    assert encoder.dimension == 384


def test_bucketed_equals_each_bucket_encoded_separately(encoder: TempScaleEncoder) -> None:
    buckets = [
        Bucket(min_tokens=0, max_tokens=32, tau=1.0),
        Bucket(min_tokens=32, max_tokens=200, tau=0.7),
        Bucket(min_tokens=200, max_tokens=None, tau=0.85),
    ]
    bucketed = encoder.with_config(buckets=buckets)
    texts = [*MIXED_TEXTS, LONG, "another short one"]
    together = bucketed.encode(texts)
    lengths = [min(n, encoder.window) for n in encoder.count_tokens(texts)]
    expected = np.zeros_like(together)
    for bucket in buckets:
        idx = [i for i, n in enumerate(lengths) if bucket.min_tokens <= n < (bucket.max_tokens or 10**9)]
        assert idx, f"test texts must populate bucket {bucket.label()}"
        expected[idx] = encoder.with_config(temperature=bucket.tau).encode([texts[i] for i in idx])
    np.testing.assert_allclose(together, expected, atol=1e-6)
    report = bucketed.last_report
    assert [b.bucket for b in report.buckets.values()] == ["0-32", "32-200", "200+"]
    assert report.buckets["32-200"].taus == [0.7]


def test_vectors_do_not_depend_on_call_neighbours(encoder: TempScaleEncoder) -> None:
    alone = encoder.encode([MIXED_TEXTS[2]])
    crowd = encoder.encode([*MIXED_TEXTS, LONG], query=False)
    np.testing.assert_allclose(alone[0], crowd[2], atol=1e-6)


@pytest.mark.parametrize(
    ("ahead", "workers"), [(False, 0), (True, 0), (True, 2)], ids=["inline", "threads", "processes"]
)
def test_parts_and_planning_ahead_change_nothing(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, ahead: bool, workers: int
) -> None:
    """Cutting a call into parts (planned inline, or ahead in threads or tokenizer processes as on a GPU) gives the
    same batches, so the same vectors to the bit and the same report."""
    chunked = encoder.with_config(long_text="chunk_mean", chunk_overlap=64, document_prompt="passage: ")
    texts = [*MIXED_TEXTS, LONG, "", *MIXED_TEXTS[::-1], LONG[: len(LONG) // 2], "naïve café 日本語 🚀"] * 2
    whole, whole_report = chunked.encode_with_report(texts)
    monkeypatch.setattr(encoder_module, "PART_TEXTS", 3)
    monkeypatch.setattr(TempScaleEncoder, "_plan_ahead", lambda self: ahead)
    pooled: list[int] = []
    tokenize = TokenizerPool.tokenize
    monkeypatch.setattr(TokenizerPool, "tokenize", lambda pool, part: pooled.append(len(part)) or tokenize(pool, part))
    parts, parts_report = chunked.with_config(tokenize_workers=workers).encode_with_report(texts)
    assert sum(pooled) == (len(texts) if workers else 0)  # the processes really did all the tokenising
    np.testing.assert_array_equal(parts, whole)
    whole_report.seconds = parts_report.seconds = 0.0
    assert parts_report == whole_report
    assert parts_report.segments > len(texts) and parts_report.empty_inputs == 2


@pytest.mark.parametrize("part_texts", [2_048, 3], ids=["one-part", "parts-of-3"])
def test_token_ids_give_the_texts_vectors_to_the_bit(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, part_texts: int
) -> None:
    """Texts tokenised elsewhere (`tokenize`, or `tokenize_texts` without a model, as a Ray CPU stage does) and handed
    over as ids: the same vectors to the bit and the same report as `encode` on the texts, across prompts, queries,
    buckets, chunk_mean and parts; a Ray-style split into pieces and back changes nothing."""
    monkeypatch.setattr(encoder_module, "PART_TEXTS", part_texts)
    texts = [*MIXED_TEXTS, LONG, "", "   ", *MIXED_TEXTS[::-1], "naïve café 日本語 🚀", "tab\tand\nnewline"]
    bucketed = encoder.with_config(
        buckets=[Bucket(min_tokens=0, max_tokens=16, tau=1.0), Bucket(min_tokens=16, max_tokens=None, tau=0.8)],
        query_prompt="query: ",
        query_temperature=0.9,
        document_prompt="passage: ",
        max_batch_tokens=256,
    )
    tokenizer_json = encoder.rust_tokenizer.to_str()
    for engine, query in [
        (bucketed, False),
        (bucketed, True),
        (bucketed.with_config(long_text="chunk_mean", chunk_overlap=32), False),
    ]:
        expected, expected_report = engine.encode_with_report(texts, query=query)
        tokens = engine.tokenize(texts, query=query)
        prompt = engine.config.query_prompt if query else engine.config.document_prompt
        elsewhere = tokenize_texts(tokenizer_json, texts, prompt)
        np.testing.assert_array_equal(elsewhere.ids, tokens.ids)
        np.testing.assert_array_equal(elsewhere.lengths, tokens.lengths)
        np.testing.assert_array_equal(elsewhere.blank, tokens.blank)
        pieces = TokenizedTexts.concat([tokens.slice(0, 5), tokens.slice(5, 9), tokens.slice(9, len(tokens))])
        rows = TokenizedTexts.from_lists(tokens.split(), blank=tokens.blank)
        for given in (tokens, pieces, rows):
            vectors, report = engine.encode_tokens_with_report(given, query=query)
            np.testing.assert_array_equal(vectors, expected)
            expected_report.seconds = report.seconds = 0.0
            assert report == expected_report
        assert expected_report.empty_inputs == 2
    np.testing.assert_array_equal(bucketed.encode_tokens(bucketed.tokenize([])), bucketed.encode([]))


def test_token_ids_are_checked(encoder: TempScaleEncoder) -> None:
    with pytest.raises(TypeError, match="TokenizedTexts"):
        encoder.encode_tokens([[101, 2023]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocabulary"):
        encoder.encode_tokens(TokenizedTexts(np.array([5, 10**6]), np.array([2])))
    with pytest.raises(ValueError, match="vocabulary"):
        encoder.encode_tokens(TokenizedTexts(np.array([-1]), np.array([1])))
    with pytest.raises(ValueError, match="add up to 3 tokens but ids holds 2"):
        TokenizedTexts(np.array([5, 6]), np.array([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        TokenizedTexts(np.array([5.0]), np.array([1]))


def test_parts_planned_ahead_start_small() -> None:
    spans = encoder_module._ramped_spans(5_000)
    assert [b - a for a, b in spans] == [256, 512, 1024, 2048, 1160]
    assert spans[0][0] == 0 and spans[-1][1] == 5_000
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(spans))


@pytest.mark.parametrize("part_texts", [2_048, 3], ids=["one-part", "parts-of-3"])
def test_lists_are_the_arrays_vectors_batch_by_batch(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, part_texts: int
) -> None:
    """`encode_lists` (what the adapters call) converts each batch while the next runs: the same floats in input
    order and the same report as `encode_with_report`, across buckets, parts, queries, normalisation and chunk_mean."""
    monkeypatch.setattr(encoder_module, "PART_TEXTS", part_texts)
    bucketed = encoder.with_config(
        buckets=[Bucket(min_tokens=0, max_tokens=16, tau=1.0), Bucket(min_tokens=16, max_tokens=None, tau=0.8)],
        max_batch_tokens=64,  # many small batches, so conversions really interleave with later batches
    )
    texts = [*MIXED_TEXTS, LONG, "", *MIXED_TEXTS[::-1], "naïve café 日本語 🚀"] * 2
    for engine, query in [
        (bucketed, False),
        (bucketed, True),
        (bucketed.with_config(normalize=False), False),
        (bucketed.with_config(long_text="chunk_mean", chunk_overlap=32), False),
    ]:
        arrays, array_report = engine.encode_with_report(texts, query=query)
        lists, list_report = engine.encode_lists(texts, query=query)
        assert len(lists) == len(texts) and all(type(x) is float for x in lists[0])
        np.testing.assert_array_equal(np.asarray(lists, dtype=np.float32), arrays)
        array_report.seconds = list_report.seconds = 0.0
        assert list_report == array_report
    assert bucketed.encode_lists([]) == ([], bucketed.encode_with_report([])[1])


def test_lists_pause_the_garbage_collector_only_while_converting(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is off while batches become lists, back on afterwards, and left off if the caller turned it off
    (and back on after a failed call)."""
    seen: list[bool] = []
    real_tolist = torch.Tensor.tolist

    def spy(self: torch.Tensor) -> Any:
        seen.append(gc.isenabled())
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", spy)
    engine = encoder.with_config(max_batch_tokens=64)
    assert gc.isenabled()
    lists, _ = engine.encode_lists(MIXED_TEXTS)
    assert len(lists) == len(MIXED_TEXTS) and seen and not any(seen) and gc.isenabled()
    engine.with_config(long_text="chunk_mean").encode_lists(MIXED_TEXTS)  # converts the whole array at the end
    assert gc.isenabled()
    gc.disable()
    try:
        engine.encode_lists(MIXED_TEXTS)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def broken(self: torch.Tensor) -> Any:
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(torch.Tensor, "tolist", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        engine.encode_lists(MIXED_TEXTS)
    assert gc.isenabled()


def test_truncation_is_reported_per_bucket(encoder: TempScaleEncoder, caplog: pytest.LogCaptureFixture) -> None:
    n_tokens = encoder.count_tokens([LONG])[0]
    assert n_tokens > 512
    with caplog.at_level("WARNING", logger="tempscale_rag"):
        encoder.encode([LONG, "short"])
    report = encoder.last_report
    assert report.truncated_inputs == 1
    assert report.dropped_tokens == n_tokens - 512
    assert report.buckets["256+"].truncated_inputs == 1
    assert report.buckets["256+"].dropped_tokens == n_tokens - 512
    assert sum("exceeded the 512-token window" in r.message for r in caplog.records) == 1


def test_chunk_mean_covers_the_whole_text(encoder: TempScaleEncoder) -> None:
    chunked = encoder.with_config(long_text="chunk_mean", chunk_overlap=16)
    text = LONG + " Finally the remote will be shaped like a banana."
    vec = chunked.encode([text])
    report = chunked.last_report
    assert report.truncated_inputs == 0 and report.dropped_tokens == 0
    assert report.segments >= 2
    assert np.isclose(np.linalg.norm(vec[0]), 1.0, atol=1e-5)
    truncated = encoder.encode([text])
    assert float(vec[0] @ truncated[0]) < 0.99999, "chunk_mean must see the text past the window"
    # A text that fits the window gives the same vector under both policies.
    np.testing.assert_allclose(chunked.encode(["fits easily"]), encoder.encode(["fits easily"]), atol=1e-6)


def test_query_mode_prepends_prompt_and_uses_query_temperature(encoder: TempScaleEncoder) -> None:
    prompted = encoder.with_config(query_prompt="query: ", temperature=0.7, query_temperature=1.0)
    q = prompted.encode(["budget meeting"], query=True)
    np.testing.assert_allclose(q, encoder.with_config(temperature=1.0).encode(["query: budget meeting"]), atol=1e-6)
    with_prompt = encoder.count_tokens(["query: budget meeting"])[0]
    assert prompted.count_tokens(["budget meeting"], query=True)[0] == with_prompt


def test_empty_list_gives_empty_array(encoder: TempScaleEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_bad_items_raise_type_error_naming_position(encoder: TempScaleEncoder) -> None:
    with pytest.raises(TypeError, match="position 1"):
        encoder.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="position 0"):
        encoder.encode([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a single string")
    with pytest.raises(TypeError, match="None"):
        encoder.encode(None)  # type: ignore[arg-type]


def test_empty_whitespace_and_odd_characters_do_not_crash(encoder: TempScaleEncoder) -> None:
    texts = ["", "   \n\t", "\x00\x07 control", "🤖🚀 emoji", "word " * 200_000]  # the last is 1 MB
    out = encoder.encode(texts)
    assert out.shape == (5, 384) and np.isfinite(out).all()
    assert encoder.last_report.empty_inputs == 2
    assert encoder.last_report.truncated_inputs == 1
    # The documented rule: blank text is encoded as the model encodes an empty string.
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "finite number > 0"),
        ({"temperature": float("nan")}, "finite number > 0"),
        ({"buckets": "0-100:1.0,50-:0.8"}, "overlap"),
        ({"buckets": "0-100:1.0,200-:0.8"}, "gap"),
        ({"buckets": "0-100:1.0,100-300:-1"}, "finite number > 0"),
        ({"buckets": "0-100:1.0"}, "open-ended"),
        ({"long_text": "summarise"}, "long_text"),
        ({"max_seq_length": 4096}, "exceeds the model"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_configuration_is_rejected(encoder: TempScaleEncoder, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encoder.with_config(**kwargs)


def test_unknown_model_path_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="cannot load sentence-transformers model"):
        TempScaleEncoder(str(tmp_path) + "/no-such-model", device="cpu")


def test_schedule_routes_long_inputs_to_lower_tau(encoder: TempScaleEncoder) -> None:
    scheduled = encoder.with_config(schedule="longembed", schedule_n0=64)
    scheduled.encode(["short", LONG])
    taus = sorted({t for b in scheduled.last_report.buckets.values() for t in b.taus})
    assert taus[0] == pytest.approx(round(1 / (np.log(512) / np.log(64)), 2))
    assert taus[-1] == 1.0


def test_padded_lengths_come_from_a_small_fixed_set() -> None:
    shapes = {padded_length(n, 512) for n in range(1, 513)}
    assert len(shapes) <= 24 and max(shapes) == 512
    assert all(padded_length(n, 512) >= n for n in range(1, 513))
