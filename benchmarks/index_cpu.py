"""Index a real folder of long documents: `tempscale-rag index` vs the equivalent LlamaIndex pipeline, in one run.

Documents: QMSum meeting transcripts from ../shared/data/qmsum (written as .txt files into a temporary folder; several
MB). Both sides use the same model (the bundled all-MiniLM-L6-v2 at its full 512-token window), the same chunking
(LlamaIndex `SentenceSplitter` counting the model's tokens, chunk size and overlap taken from tempscale-rag's
chunker) and an exact FAISS inner-product index. The LlamaIndex side is what a user would otherwise write:
`SimpleDirectoryReader` -> `IngestionPipeline([SentenceSplitter, HuggingFaceEmbedding])` -> `FaissVectorStore`,
with `HuggingFaceEmbedding` at its default `embed_batch_size` (10) and at 64. Each method runs in its own fresh
process (imports and model loading included, as a user experiences them); the table shows medians.

    python benchmarks/index_cpu.py [--docs 40] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QMSUM = ROOT.parent / "shared" / "data" / "qmsum" / "corpus.jsonl"

LLAMAINDEX_JOB = r"""
import json, sys, time
start = time.perf_counter()
import faiss
from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.vector_stores.faiss import FaissVectorStore
from transformers import AutoTokenizer
from tempscale_rag.models import bundled_model_path

folder, chunk, overlap, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
count = lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
documents = SimpleDirectoryReader(folder, filename_as_id=True).load_data()
for doc in documents:  # embed the text only, as tempscale-rag does (LlamaIndex would prepend file metadata)
    doc.excluded_embed_metadata_keys = list(doc.metadata)
embed = HuggingFaceEmbedding(model_name=bundled_model_path(), max_length=512, device="cpu", embed_batch_size=batch)
# include_metadata=False: split the text exactly as tempscale-rag does (metadata-aware splitting would shrink the
# chunks by the metadata's length and make ~6% more of them).
splitter = SentenceSplitter(chunk_size=chunk, chunk_overlap=overlap, tokenizer=count, include_metadata=False)
pipeline = IngestionPipeline(transformations=[splitter, embed])
nodes = pipeline.run(documents=documents)
store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(384))
index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed)
print(json.dumps({"chunks": len(nodes), "seconds": time.perf_counter() - start}))
"""


def write_corpus(folder: Path, n_docs: int) -> int:
    docs = [json.loads(line) for line in QMSUM.open(encoding="utf-8")][:n_docs]
    for doc in docs:
        (folder / f"{doc['_id']}.txt").write_text(doc["text"], encoding="utf-8")
    return sum(len(d["text"].encode("utf-8")) for d in docs)


def run_tempscale(folder: Path, out: Path, chunk: int, overlap: int) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    # One chunk size, the LlamaIndex side's: the CLI's default chunks every file at four sizes.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tempscale_rag.cli",
            "-q",
            "index",
            str(folder),
            "--out",
            str(out),
            "--json",
            "--device",
            "cpu",
            "--chunk-tokens",
            str(chunk),
            "--chunk-overlap-tokens",
            str(overlap),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, json.loads(done.stdout)["chunks"]


def run_llamaindex(folder: Path, chunk: int, overlap: int, batch: int) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LLAMAINDEX_JOB, str(folder), str(chunk), str(overlap), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, json.loads(done.stdout.strip().splitlines()[-1])["chunks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40, help="QMSum transcripts to index (40 is about 2.3 MB)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not QMSUM.exists():
        sys.exit(f"needs the QMSum transcripts at {QMSUM} (../shared/data/qmsum)")

    from tempscale_rag import TempScaleEncoder
    from tempscale_rag.ingest.chunking import WindowChunker

    chunker = WindowChunker(TempScaleEncoder(device="cpu"))
    chunk, overlap = chunker.chunk_tokens, chunker.overlap_tokens
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        size = write_corpus(folder, args.docs)
        methods = {
            "tempscale-rag index (CLI)": lambda: run_tempscale(folder, Path(tmp) / "index", chunk, overlap),
            "LlamaIndex + HuggingFaceEmbedding (batch 10)": lambda: run_llamaindex(folder, chunk, overlap, 10),
            "LlamaIndex + HuggingFaceEmbedding (batch 64)": lambda: run_llamaindex(folder, chunk, overlap, 64),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        chunks: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                seconds, chunks[name] = fn()
                times[name].append(seconds)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ours = med["tempscale-rag index (CLI)"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"corpus: {args.docs} QMSum transcripts, {size / 1e6:.1f} MB; chunk {chunk} tokens, overlap {overlap}; "
        f"median of {args.repeats} run(s), each a fresh process"
    )
    print(f"{'method':46s} {'wall s':>8s} {'chunks':>7s} {'tempscale-rag speed-up':>23s}")
    for name in methods:
        print(f"{name:46s} {med[name]:8.1f} {chunks[name]:7d} {med[name] / ours:22.2f}x")


if __name__ == "__main__":
    main()
