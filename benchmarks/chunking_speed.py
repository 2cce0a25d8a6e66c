"""How long the default four-size split takes, against the same split by the code at another git revision.

Texts: the first `--qmsum` QMSum transcripts and `--essays` Paul Graham essays from ../shared/data when present, two
source files of this package (code), and `--synthetic-mb` MB of `benchmarks/big_file.py`'s text. Each code version
splits every text at the default sizes (`MultiSizeChunker`, the bundled model's tokenizer) in a fresh process, after
one warm-up split (the LlamaIndex and NLTK imports); the chunks of both versions are compared and must be identical.
Printed: median seconds of `--repeats` rounds per version, their ratio, chunks and characters.

    python benchmarks/chunking_speed.py --baseline-rev 6fe15cf~1 [--repeats 3] [--synthetic-mb 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

_JOB = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import tempscale_rag
assert tempscale_rag.__file__.startswith(sys.argv[1]), tempscale_rag.__file__
from tempscale_rag.config import BUNDLED_MODEL, ChunkingConfig
from tempscale_rag.ingest.chunking import MultiSizeChunker
from tempscale_rag.windows import TokenCounter
texts = json.load(open(sys.argv[2], encoding="utf-8"))
chunker = MultiSizeChunker(TokenCounter.from_model(BUNDLED_MODEL), ChunkingConfig())
chunker.split(texts[0][:2000])
start = time.perf_counter()
chunks = [[(c.text, c.position, c.size) for c in chunker.split(text)] for text in texts]
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "chunks": sum(map(len, chunks)), "digest": __import__("hashlib").sha256(
    json.dumps(chunks).encode()).hexdigest()}))
"""


def texts(args: argparse.Namespace) -> list[str]:
    """The texts to split: real ones when ../shared/data has them, code, and the synthetic big-file text."""
    found: list[str] = []
    corpus = DATA / "qmsum" / "corpus.jsonl"
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as lines:
            for _, line in zip(range(args.qmsum), lines, strict=False):
                found.append(json.loads(line)["text"])
    essays = sorted((DATA / "paul_graham_essays" / "txt").glob("*"))[: args.essays]
    found += [path.read_text(encoding="utf-8", errors="replace") for path in essays]
    found += [(ROOT / "tempscale_rag" / name).read_text(encoding="utf-8") for name in ("encoder.py", "cli/__init__.py")]
    if args.synthetic_mb > 0:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from big_file import write_text

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "synthetic.txt"
            write_text(path, args.synthetic_mb)
            found.append(path.read_text(encoding="utf-8"))
    return found


def checkout(rev: str, into: Path) -> Path:
    """The package at git revision `rev`, extracted under `into`."""
    archive = subprocess.run(["git", "archive", rev, "tempscale_rag"], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    tar = into / "code.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as handle:
        handle.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline-rev", required=True, help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qmsum", type=int, default=6)
    parser.add_argument("--essays", type=int, default=20)
    parser.add_argument("--synthetic-mb", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        corpus = texts(args)
        data = folder / "texts.json"
        data.write_text(json.dumps(corpus), encoding="utf-8")
        versions = {args.baseline_rev: checkout(args.baseline_rev, folder / "baseline"), "this tree": ROOT}
        seconds: dict[str, list[float]] = {name: [] for name in versions}
        digests: dict[str, set[str]] = {name: set() for name in versions}
        chunks = 0
        for round_ in range(1, args.repeats + 1):
            for name, code in versions.items():
                env = {**os.environ, "PYTHONPATH": str(code)}
                done = subprocess.run(
                    [sys.executable, "-c", _JOB, str(code), str(data)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                seconds[name].append(result["seconds"])
                digests[name].add(result["digest"])
                chunks = result["chunks"]
                print(f"round {round_}: {name}: {result['seconds']:.2f} s, {result['chunks']} chunks", flush=True)
    characters = sum(map(len, corpus))
    same = len(set().union(*digests.values())) == 1
    digest = hashlib.sha256("".join(sorted(set().union(*digests.values()))).encode()).hexdigest()[:12]
    print(
        f"\n{len(corpus)} texts, {characters:,} characters, default sizes; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; medians of {args.repeats} fresh processes"
    )
    base = statistics.median(seconds[args.baseline_rev])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:24} {median:8.2f} s  {median / base:5.2f}x  {chunks} chunks")
    print(f"chunks identical across versions: {same} ({digest})")
    if not same:
        raise SystemExit("the two versions cut different chunks")


if __name__ == "__main__":
    main()
