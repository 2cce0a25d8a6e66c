"""What an index costs: the hybrid default and the fast preset vs the dense-only four-size index they replace.

Documents: QMSum meeting transcripts from ../shared/data/qmsum (written as .txt files into a temporary folder). Each
configuration is one `tempscale-rag index` run in a fresh process (imports, model loading, reading, chunking,
embedding and writing included, as a user experiences it), the configurations interleaved, `--repeats` rounds. Printed
per configuration: median wall seconds and CPU seconds (user + system of the process), their ratio to the first row
(the dense-only four-size index, what `tempscale-rag index` built before hybrid retrieval), chunks (vectors) stored,
tokens embedded per source token and vectors per 1,000 source tokens (from the index's own summary).

    python benchmarks/index_cost.py [--docs 8] [--repeats 2] [--also 48:1,192:0.8,499:0.8 ...] [--baseline-rev REV]

`--baseline-rev REV` adds, as the first row (the one the ratios are against), `tempscale-rag index` of the code at
git revision REV (extracted with `git archive`, run on the same virtualenv): e.g. the default as it was before
hybrid retrieval came in (7797ebd), which is what issue 25's cost target compares with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QMSUM = ROOT.parent / "shared" / "data" / "qmsum" / "corpus.jsonl"

CONFIGS = {
    "before: 24,48,192,499 dense only": ["--no-lexical"],
    "default: 24,48,192,499 + BM25 (hybrid)": [],
    "--preset fast: 499 + BM25 (hybrid)": ["--preset", "fast"],
}


def run(folder: Path, out: Path, flags: list[str], code: Path = ROOT) -> tuple[float, float, dict[str, object]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "tempscale_rag", "-q", "index", str(folder), "--out", str(out), "--json", *flags]
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=8, help="QMSum transcripts to index")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="SPEC",
        help="another --chunk-tokens spec to measure (repeatable)",
    )
    parser.add_argument("--baseline-rev", default=None, metavar="REV", help="also index with the code at git REV")
    args = parser.parse_args()
    configs = {**CONFIGS, **{f"--chunk-tokens {spec}": ["--chunk-tokens", spec] for spec in args.also}}
    codes = dict.fromkeys(configs, ROOT)
    if args.baseline_rev:
        old = f"{args.baseline_rev}: default (dense only)"
        configs = {old: [], **configs}
    if not QMSUM.exists():
        sys.exit(f"needs {QMSUM} (the shared QMSum data)")
    work = Path(tempfile.mkdtemp(prefix="index-cost-"))
    try:
        if args.baseline_rev:
            codes[old] = work / "baseline-code"
            codes[old].mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline_rev], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(codes[old])], input=archive, check=True)
        folder = work / "docs"
        folder.mkdir()
        with QMSUM.open(encoding="utf-8") as lines:
            for i, line in enumerate(lines):
                if i >= args.docs:
                    break
                record = json.loads(line)
                (folder / f"{record['_id']}.txt").write_text(record["text"], encoding="utf-8")
        results: dict[str, list[tuple[float, float, dict[str, object]]]] = {name: [] for name in configs}
        for r in range(args.repeats):
            for name, flags in configs.items():
                out = work / f"index-{r}-{len(results[name])}-{abs(hash(name))}"
                results[name].append(run(folder, out, flags, codes[name]))
                print(
                    f"round {r + 1}: {name}: {results[name][-1][0]:.1f} s wall, {results[name][-1][1]:.1f} s CPU",
                    flush=True,
                )
        from tokenizers import Tokenizer

        from tempscale_rag.models import bundled_model_path

        tok = Tokenizer.from_file(str(Path(bundled_model_path()) / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        texts = [p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())]
        source_tokens = sum(len(e.ids) - 2 for e in tok.encode_batch(texts))
        base_wall = statistics.median(w for w, _, _ in results[next(iter(configs))])
        base_cpu = statistics.median(c for _, c, _ in results[next(iter(configs))])
        print(
            f"\n{args.docs} QMSum transcripts, {source_tokens:,} source tokens; {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; medians of {args.repeats} fresh processes"
        )
        print(
            f"{'configuration':42} {'wall s':>7} {'x':>5} {'CPU s':>7} {'x':>5} {'vectors':>8} "
            f"{'tok/src':>8} {'vec/1k':>7}"
        )
        for name, runs in results.items():
            wall = statistics.median(w for w, _, _ in runs)
            cpu = statistics.median(c for _, c, _ in runs)
            summary = runs[-1][2]
            chunks = int(summary["chunks"])  # type: ignore[call-overload]
            tokens = int(summary["tokens"])  # type: ignore[call-overload]
            print(
                f"{name:42} {wall:7.1f} {wall / base_wall:5.2f} {cpu:7.1f} {cpu / base_cpu:5.2f} {chunks:8d} "
                f"{tokens / source_tokens:8.2f} {1000 * chunks / source_tokens:7.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
