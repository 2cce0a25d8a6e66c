"""Shared fixtures: the real bundled model, loaded once per session, and tiny random models of other architectures."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from tempscale_rag import TempScaleEncoder
from tempscale_rag.models import bundled_model_path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MIXED_TEXTS = [
    "short query",
    "What did the committee decide about the budget for the remote control design?",
    "The grass is green. The sky is blue. " * 12,
    "Project manager: so we should discuss the buttons. Industrial designer: I think rubber is cheaper. " * 9,
    "a",
    "emoji 🤖 and control \x07 characters \t\n are fine",
    "Marketing: the trend watchers say fruit and vegetables are in this year. " * 30,
]

THREE_DOCS = {
    "chain.txt": "Clean the bicycle chain with a degreaser, dry it, then apply one drop of lubricant per roller. ",
    "soup.md": "# Red lentil soup\n\nFry onion and cumin, add red lentils and stock, simmer twenty minutes. ",
    "contract.rst": "Termination\n===========\n\nEither party may terminate this agreement with ninety days notice. ",
}
"""A small folder of one text, one Markdown and one reStructuredText file on three distinct topics (`write_docs`)."""


def write_docs(folder: Path, repeat: int, docs: dict[str, str] = THREE_DOCS) -> Path:
    """Write each of `docs` into `folder`, its text repeated `repeat` times; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text * repeat, encoding="utf-8")
    return folder


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`tempscale-rag --quiet ARGS` in this process: exit code, stdout, stderr."""
    from tempscale_rag.cli import main

    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def encoder() -> TempScaleEncoder:
    """The engine on the real bundled all-MiniLM-L6-v2, on the CPU, with default buckets."""
    torch.manual_seed(0)
    return TempScaleEncoder(device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build (once per architecture) a small random-weight model that uses the bundled tokenizer's vocabulary."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        MPNetConfig,
        MPNetModel,
        RobertaConfig,
        RobertaModel,
        T5Config,
        T5EncoderModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    common = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_token_id}
    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    bert_like = {**common, **sizes}
    builders = {
        "bert": lambda: BertModel(BertConfig(**bert_like, max_position_embeddings=128)),
        "roberta": lambda: RobertaModel(RobertaConfig(**bert_like, max_position_embeddings=130)),
        "xlm-roberta": lambda: XLMRobertaModel(XLMRobertaConfig(**bert_like, max_position_embeddings=130)),
        "mpnet": lambda: MPNetModel(MPNetConfig(**bert_like, max_position_embeddings=130)),
        "distilbert": lambda: DistilBertModel(
            DistilBertConfig(**common, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=128)
        ),
        "t5": lambda: T5EncoderModel(
            T5Config(**common, d_model=64, d_kv=16, num_heads=4, num_layers=2, d_ff=128, decoder_start_token_id=0)
        ),
    }
    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            torch.manual_seed(1234)
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            builders[arch]().save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[arch] = folder
        return built[arch]

    return build


def load_tiny(folder: Path, **model_kwargs: object) -> SentenceTransformer:
    """A SentenceTransformer (transformer + mean pooling, no normalisation) over a tiny model folder."""
    transformer = Transformer(str(folder), model_kwargs=dict(model_kwargs) or None)
    pooling = Pooling(transformer.get_embedding_dimension(), "mean")
    st = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    st.max_seq_length = 120  # the tiny models have 128 positions; the tokenizer would allow 512
    return st


async def loop_ticks_while_encoding(
    encoder: TempScaleEncoder, monkeypatch: pytest.MonkeyPatch, work: Callable[[], Awaitable[Any]]
) -> int:
    """How often the event loop ticks while `work` runs with an engine slowed by a blocking 0.15 s pause per call.

    The pause makes the check independent of how fast this machine embeds: an adapter that blocks the loop gets
    (almost) no ticks.
    """
    real = encoder.encode_lists  # what the adapters call

    def slow(texts: list[str], **kwargs: Any) -> Any:
        time.sleep(0.15)
        return real(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode_lists", slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await work()
    finally:
        task.cancel()
    return ticks


def reference_group_score(scoring: Any, query: Any, vectors: Any) -> float:
    """Brute force, straight from the definitions: one (document, chunk size) group's score for a unit `query`.

    Args:
        scoring: A `DocumentScoring` (method, top_m, softmax_temperature).
        query: The query vector.
        vectors: The group's unit chunk vectors, one per row.
    """
    vectors = np.asarray(vectors)
    cosines = sorted((float(query @ v) for v in vectors), reverse=True)
    mean_vector = vectors.astype(np.float64).sum(axis=0)
    cos_mean = float(query @ (mean_vector / np.linalg.norm(mean_vector)))
    if scoring.method == "max":
        return cosines[0]
    if scoring.method == "mean":
        return cos_mean
    if scoring.method == "hybrid":
        return (cosines[0] + cos_mean) / 2
    if scoring.method == "topm":
        top = cosines[: scoring.top_m]
        return sum(top) / len(top)
    t = scoring.softmax_temperature
    return t * math.log(sum(math.exp(c / t) for c in cosines) / len(cosines))
