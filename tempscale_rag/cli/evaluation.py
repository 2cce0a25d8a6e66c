"""`tempscale-rag eval`, `collapse` and `calibrate`: measure what TempScale is worth on your data, and tune it.

- `eval DATASET`: retrieval scores of several configurations side by side (baseline tau = 1, global taus, per-size
  taus, buckets, calibration files, a schedule) along the doc-score, chunk-size, long-text and window axes, each with
  its indexing cost; by default what the product does (documents chunked as `index` chunks them, ranked from their
  chunks). Prints a Markdown table (or JSON); writes JSON, Markdown and a PNG only into `--out DIR`.
- `collapse CORPUS`: mean pairwise cosine and spread of embeddings per token length, with and without TempScale.
- `calibrate CORPUS`: choose a tau per chunk size (or per length bucket with `--buckets`), label-free or by a search
  on a labelled `--dev` set, and write the calibration file that `index`, `eval` and both integrations load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tempscale_rag.cli.options import RUNTIME_FIELDS, add_argument
from tempscale_rag.config import PRESETS, RETRIEVALS, TempScaleConfig

logger = logging.getLogger(__name__)

SYNTHETIC = ("passkey", "needle")


def register(subparsers: Any) -> None:
    """Add the `eval`, `collapse` and `calibrate` subcommands."""
    _register_eval(subparsers)
    _register_collapse(subparsers)
    _register_calibrate(subparsers)


# -- shared flags --------------------------------------------------------------------------------------------------


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    fields = TempScaleConfig.model_fields
    group = parser.add_argument_group("model and batching (TempScaleConfig)")
    add_argument(group, "--model", default=None, help=fields["model"].description)
    add_argument(group, "--device", default=None, help=fields["device"].description)
    add_argument(
        group,
        "--dtype",
        default=None,
        choices=("auto", "float32", "float16", "bfloat16"),
        help=fields["dtype"].description,
    )
    add_argument(group, "--max-batch-tokens", type=int, default=None, help=fields["max_batch_tokens"].description)
    add_argument(group, "--tokenize-workers", type=int, default=None, help=fields["tokenize_workers"].description)
    add_argument(group, "--chunk-overlap", type=int, default=None, help=fields["chunk_overlap"].description)


def _add_temperature_flags(parser: argparse.ArgumentParser, *, schedules: bool = True) -> None:
    group = parser.add_argument_group("configurations compared (tau = 1 is always included)")
    add_argument(
        group, "--temperature", type=float, nargs="+", default=None, metavar="T", help="Global taus, e.g. 0.9 0.8."
    )
    add_argument(
        group,
        "--buckets",
        action="extend",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="Bucketed taus, e.g. '0-128:1.0,128-256:0.9,256-:0.8', or 'default'; repeatable.",
    )
    add_argument(
        group,
        "--calibration",
        action="extend",
        nargs="+",
        default=None,
        metavar="FILE",
        help="Calibration files from `tempscale-rag calibrate`; repeatable.",
    )
    if schedules:
        add_argument(
            group,
            "--schedule",
            nargs="+",
            default=None,
            choices=("longembed",),
            help="Continuous schedule tau(n) = 1/max(1, ln n / ln 512).",
        )


def _base_config(args: argparse.Namespace, **fields: Any) -> TempScaleConfig:
    for name in ("model", "chunk_overlap", *RUNTIME_FIELDS):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    try:
        return TempScaleConfig(**fields)
    except ValueError as exc:
        raise ValueError(f"invalid configuration: {exc}".replace("\n", " ")) from None


def _show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


def _load_encoder(config: TempScaleConfig) -> Any:
    from tempscale_rag.encoder import TempScaleEncoder

    return TempScaleEncoder(config=config)


def _dataset_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("synthetic tasks (passkey, needle)")
    add_argument(group, "--lengths", type=int, nargs="+", default=None, help="Target lengths (default 256 ... 32768).")
    add_argument(group, "--haystack", default=None, metavar="DIR", help="needle: folder of haystack .txt files.")
    add_argument(group, "--needles", default=None, metavar="FILE", help="needle: file of fact<TAB>question lines.")
    add_argument(group, "--seed", type=int, default=0, help="Seed of the generators and of --limit-queries.")
    add_argument(group, "--n-docs", type=int, default=100, help="Candidate documents per length.")
    add_argument(group, "--n-queries", type=int, default=50, help="Queries per length.")
    group = parser.add_argument_group("subsets")
    add_argument(group, "--limit-queries", type=int, default=None, metavar="N", help="Evaluate N sampled queries.")
    add_argument(
        group, "--split-file", default=None, metavar="TSV", help="doc-id<TAB>split file (e.g. QMSum's doc_splits.tsv)."
    )
    add_argument(group, "--split", default=None, help="Keep the queries whose relevant documents are in this split.")


def load_task(
    dataset: str, args: argparse.Namespace, *, split_file: str | None = None, split: str | None = None
) -> Any:
    """The `EvalTask` a DATASET argument names: a BEIR folder, `passkey` or `needle`."""
    from tempscale_rag.evaluation.runner import beir_task, needle_task, passkey_task, split_by_documents

    lengths = args.lengths
    synthetic_options = {"n_docs": args.n_docs, "n_queries": args.n_queries, "seed": args.seed}
    if dataset == "passkey":
        task = passkey_task(**({"lengths": lengths} if lengths else {}), **synthetic_options)
    elif dataset == "needle":
        if not args.haystack or not args.needles:
            raise ValueError(
                "the needle task needs --haystack DIR (LongEmbed uses Paul Graham's essays) and --needles FILE "
                "(fact<TAB>question lines); nothing is bundled"
            )
        task = needle_task(
            args.haystack, args.needles, **({"lengths": lengths} if lengths else {}), **synthetic_options
        )
    else:
        path = Path(dataset)
        if not path.is_dir():
            raise ValueError(
                f"dataset {dataset!r} is neither 'passkey', 'needle' nor a BEIR folder "
                "(corpus.jsonl, queries.jsonl, qrels.tsv)"
            )
        task = beir_task(path)
    if (split_file is None) != (split is None):
        raise ValueError("--split-file and --split go together")
    if split_file is not None and split is not None:
        task = split_by_documents(task, split_file, split)
    return task.limited(args.limit_queries, seed=args.seed)


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


# -- eval ----------------------------------------------------------------------------------------------------------


def _register_eval(subparsers: Any) -> None:
    from tempscale_rag.config import DEFAULT_DOC_SCORE, DEFAULT_QUERY_TEMPERATURE, ChunkingConfig
    from tempscale_rag.ranking.documents import DOC_SCORES

    default_chunks = ChunkingConfig().spec()
    doc_scores = (*DOC_SCORES, "vector")
    parser = subparsers.add_parser(
        "eval",
        help="Compare TempScale configurations on a retrieval dataset.",
        description="Evaluate the tau = 1 baseline and TempScale configurations side by side on a BEIR folder or "
        "LongEmbed's passkey/needle tasks (nDCG@1/@10, Recall@k, MRR; acc@1 per length), each with its indexing "
        "cost (tokens embedded per source token, vectors per 1,000 source tokens, embedding seconds). By default "
        "it evaluates what the product does: every document chunked as `index` chunks it (sizes "
        f"{default_chunks}, each size its own length bucket and tau), documents ranked from their chunks "
        f"(--doc-score {DEFAULT_DOC_SCORE}), queries at tau {DEFAULT_QUERY_TEMPERATURE:g} (--query-temperature). "
        "Every pipeline "
        "gets a tau = 1 baseline row (same chunks and aggregation, every tau 1); with no --temperature, --buckets, "
        "--calibration or --schedule it is compared with the chunk sizes' own taus (and `vector` with the default "
        "buckets). Embeddings are cached per (text, tau), so a sweep embeds each distinct chunk once per tau. "
        "Results are printed (a Markdown table, or JSON with --json); files are written only with --out DIR.",
    )
    add_argument(parser, "dataset", metavar="DATASET", help="A BEIR folder, 'passkey' or 'needle'.")
    _add_temperature_flags(parser)
    add_argument(
        parser,
        "--queries",
        choices=("same", "plain", "both"),
        default="same",
        help="Global taus: encode queries at tau too (same, the paper), at tau = 1 (plain: documents only), or both; "
        "per-size taus: queries at --query-temperature (default "
        f"{DEFAULT_QUERY_TEMPERATURE:g}) as `search` does (same), at tau = 1 (plain), or both.",
    )
    group = parser.add_argument_group("pipelines compared (axes)")
    add_argument(
        group,
        "--doc-score",
        nargs="+",
        default=None,
        choices=doc_scores,
        help=f"How a document is scored (an axis; default {DEFAULT_DOC_SCORE}): from its chunks by the best chunk "
        "(max), the cosine with its mean chunk vector per size (mean), their average (hybrid), the mean of the 3 "
        "best chunks (topm) or soft-max pooling (softmax), each chunk size scored apart and averaged; or as one "
        "vector (vector: the first window, or the mean of windows with --long-text chunk_mean; LongEmbed's "
        "protocol).",
    )
    _add_fusion_flags(group)
    add_argument(
        group,
        "--chunk-tokens",
        nargs="+",
        default=None,
        metavar="SIZES",
        help="Chunk sizes of the chunked doc scores (an axis; each value is one configuration): content tokens, "
        "comma-separated for several sizes per document, each optionally SIZE:TAU, e.g. 512 256 64,128,256 "
        f"64:1,128:1,256:0.8 (default {default_chunks}, what `index` uses).",
    )
    add_argument(
        group,
        "--chunk-overlap-tokens",
        type=int,
        default=None,
        metavar="N",
        help="Tokens shared by consecutive chunks (default: min(32, size // 8) per size).",
    )
    add_argument(
        group,
        "--long-text",
        nargs="+",
        default=None,
        choices=("truncate", "chunk_mean"),
        help="Long-text policies of --doc-score vector (an axis).",
    )
    add_argument(
        group, "--max-seq-length", type=int, nargs="+", default=None, metavar="N", help="Windows to compare (an axis)."
    )
    add_argument(
        parser, "--k", type=int, nargs="+", default=None, help="Cutoffs of nDCG/recall/MRR (default 1 10 100)."
    )
    _dataset_flags(parser)
    add_argument(
        parser,
        "--out",
        dest="eval_out",
        default=None,
        metavar="DIR",
        help="Write results.json, results.md and score_vs_length.png into DIR (created if needed). Without --out "
        "nothing is written: results are only printed.",
    )
    add_argument(parser, "--json", action="store_true", help="Print one JSON document with every number on stdout.")
    add_argument(parser, "--no-per-query", action="store_true", help="Leave per-query metrics out of the JSON.")
    add_argument(parser, "--no-cache", action="store_true", help="Encode every text for every configuration.")
    _add_model_flags(parser)
    parser.set_defaults(run=run_eval)


def _calibrated_chunkings(paths: Any, overlap_tokens: int | None) -> list[Any] | None:
    """Without --chunk-tokens, chunk as the per-size calibration files were made for (None: the default sizes)."""
    from tempscale_rag.calibration import read_chunking

    found = {}
    for path in paths:
        chunking = read_chunking(path)
        if chunking is not None:
            if overlap_tokens is not None:
                chunking = chunking.model_copy(update={"overlap_tokens": overlap_tokens})
            found[(chunking.sizes, chunking.overlap_tokens)] = chunking.model_copy(update={"temperatures": None})
    return list(found.values()) or None


def _add_fusion_flags(group: Any) -> None:
    """`eval`'s --retrieval, --preset and --lexical-weight."""
    add_argument(
        group,
        "--retrieval",
        nargs="+",
        default=None,
        choices=RETRIEVALS,
        help="Retrieval channels (an axis, default all): lexical (one BM25 row), dense, hybrid (as `search`).",
    )
    add_argument(
        group,
        "--preset",
        default=None,
        choices=tuple(PRESETS),
        help="Evaluate a named preset of `index --preset` (its chunk sizes and fusion settings; --chunk-tokens "
        "keeps the preset's fusion settings with other sizes).",
    )
    add_argument(
        group,
        "--lexical-weight",
        type=float,
        nargs="+",
        default=None,
        metavar="W",
        help="Weights of the BM25 lists in the hybrid rows (an axis; the dense list weighs 1; default: the preset's, "
        "1 for the default).",
    )


def _eval_chunkings(args: argparse.Namespace) -> list[Any] | None:
    """The chunk settings `eval` compares; None: the default.

    --chunk-tokens (with a --preset's other settings), else the preset, else the calibration files' sizes.
    """
    from tempscale_rag.config import ChunkingConfig

    preset = args.preset or "default"
    if args.chunk_tokens:
        if args.preset is None:
            return list(args.chunk_tokens)
        fields = {name: value for name, value in PRESETS[preset].items() if name != "sizes"}
        overlap = {} if args.chunk_overlap_tokens is None else {"overlap_tokens": args.chunk_overlap_tokens}
        return [ChunkingConfig.parse(spec, **fields, **overlap) for spec in args.chunk_tokens]
    if args.preset is not None:
        overlap = {} if args.chunk_overlap_tokens is None else {"overlap_tokens": args.chunk_overlap_tokens}
        return [ChunkingConfig.preset(preset, **overlap)]
    return _calibrated_chunkings(args.calibration or (), args.chunk_overlap_tokens)


def run_eval(args: argparse.Namespace) -> int:
    """Run `tempscale-rag eval`."""
    from tempscale_rag.config import DEFAULT_DOC_SCORE
    from tempscale_rag.evaluation.report import markdown_report, write_outputs
    from tempscale_rag.evaluation.runner import DEFAULT_K_VALUES, RetrievalEvaluator, build_configurations

    base = _base_config(args)
    # Every flag is checked before the dataset is generated and the model loaded.
    doc_scores = args.doc_score or (DEFAULT_DOC_SCORE,)
    if (args.chunk_tokens or args.chunk_overlap_tokens is not None) and all(s == "vector" for s in doc_scores):
        raise ValueError(
            "--chunk-tokens/--chunk-overlap-tokens need a chunked --doc-score (max, mean, ...), not vector"
        )
    if args.long_text and "vector" not in doc_scores:
        raise ValueError("--long-text applies to --doc-score vector only; chunks always fit the window")
    configurations = build_configurations(
        base,
        temperatures=args.temperature or (),
        buckets=args.buckets or (),
        calibrations=args.calibration or (),
        schedules=args.schedule or (),
        long_text=args.long_text or ("truncate",),
        max_seq_lengths=args.max_seq_length or (None,),
        queries=args.queries,
        doc_scores=doc_scores,
        chunkings=_eval_chunkings(args),
        overlap_tokens=args.chunk_overlap_tokens,
        **({"retrievals": args.retrieval} if args.retrieval else {}),
        lexical_weights=args.lexical_weight,
    )
    task = load_task(args.dataset, args, split_file=args.split_file, split=args.split)
    encoder = _load_encoder(base)
    evaluator = RetrievalEvaluator(
        encoder, k_values=args.k or DEFAULT_K_VALUES, cache=not args.no_cache, show_progress=_show_progress(args)
    )
    results = evaluator.evaluate(task, configurations)
    arguments = {"arguments": {k: v for k, v in vars(args).items() if k != "run"}}
    paths = {}
    if args.eval_out:
        paths = write_outputs(results, Path(args.eval_out), per_query=not args.no_per_query, extra=arguments)
    if args.json:
        document = {**results.to_json_dict(per_query=not args.no_per_query), **arguments}
        document["outputs"] = {kind: str(path) for kind, path in paths.items()}
        _print_json(document)
    else:
        print(markdown_report(results))
        if paths:
            print(f"Wrote {paths['json']}, {paths['markdown']} and {paths['plot']}")
    return 0


# -- collapse ------------------------------------------------------------------------------------------------------


def _register_collapse(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collapse",
        help="Measure length collapse per token length, with and without TempScale.",
        description="Cut texts of controlled token lengths from CORPUS and report, per length, the mean pairwise "
        "cosine and spread of their embeddings under tau = 1, the default buckets and any --temperature or "
        "--calibration. Writes collapse.json and collapse.png; prints a Markdown table (or JSON with --json).",
    )
    add_argument(
        parser, "corpus", metavar="CORPUS", help="A folder of .txt/.md files, a BEIR folder or a corpus.jsonl."
    )
    _add_temperature_flags(parser, schedules=False)
    add_argument(parser, "--lengths", type=int, nargs="+", default=None, help="Content-token lengths to sample.")
    add_argument(parser, "--per-length", type=int, default=64, help="Texts sampled per length.")
    add_argument(parser, "--seed", type=int, default=0, help="Sampling seed.")
    add_argument(parser, "--max-seq-length", dest="window", type=int, default=None, metavar="N", help="Model window.")
    add_argument(
        parser, "--out", dest="collapse_out", default=None, metavar="DIR", help="Output folder (./tempscale-collapse)."
    )
    add_argument(parser, "--json", action="store_true", help="Print the JSON document on stdout.")
    _add_model_flags(parser)
    parser.set_defaults(run=run_collapse)


def run_collapse(args: argparse.Namespace) -> int:
    """Run `tempscale-rag collapse`."""
    from tempscale_rag.config import DEFAULT_BUCKETS
    from tempscale_rag.diagnostics.collapse import (
        DEFAULT_LENGTHS,
        collapse_table,
        measure_collapse,
        plot_collapse,
        read_corpus,
        results_to_json,
        sample_windows,
    )
    from tempscale_rag.evaluation.runner import format_buckets

    texts = read_corpus(args.corpus)
    base = _base_config(args, max_seq_length=args.window)
    configs: dict[str, TempScaleConfig] = {
        "tau=1": base.model_copy(update={"temperature": 1.0}),
        "default buckets": base.model_copy(update={"buckets": tuple(DEFAULT_BUCKETS)}),
    }
    for tau in args.temperature or ():
        if tau != 1.0:
            configs[f"tau={tau:g}"] = _base_config(args, max_seq_length=args.window, temperature=tau)
    for spec in args.buckets or ():
        if spec.strip().lower() != "default":
            config = _base_config(args, max_seq_length=args.window, buckets=spec)
            configs[f"buckets {format_buckets(config.buckets)}"] = config
    fields = base.model_dump(exclude={"buckets", "temperature", "calibration_file"})
    for path in args.calibration or ():
        configs[f"calibrated {Path(path).stem}"] = TempScaleConfig.with_calibration(path, **fields)

    encoder = _load_encoder(base)
    samples = sample_windows(encoder, texts, args.lengths or DEFAULT_LENGTHS, args.per_length, args.seed)
    results = {
        name: measure_collapse(encoder.with_config(**config.model_dump()), samples, show_progress=_show_progress(args))
        for name, config in configs.items()
    }
    folder = Path(args.collapse_out) if args.collapse_out else Path("tempscale-collapse") / Path(args.corpus).stem
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "format": "tempscale-rag collapse v1",
        "corpus": str(Path(args.corpus).resolve()),
        "documents": len(texts),
        "model": encoder.model_name,
        "window": encoder.window,
        "per_length": args.per_length,
        "seed": args.seed,
        "configurations": results_to_json(results, {name: c.to_json_dict() for name, c in configs.items()}),
    }
    json_path = folder / "collapse.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    png_path = plot_collapse(results, folder / "collapse.png", title=f"Length collapse: {encoder.model_name}")
    document["outputs"] = {"json": str(json_path), "plot": str(png_path)}
    if args.json:
        _print_json(document)
    else:
        print(f"## Length collapse of {encoder.model_name} on {args.corpus} (window {encoder.window})\n")
        print(collapse_table(results))
        print(f"\nWrote {json_path} and {png_path}")
    return 0


# -- calibrate -----------------------------------------------------------------------------------------------------


def _register_calibrate(subparsers: Any) -> None:
    from tempscale_rag.config import DEFAULT_DOC_SCORE, ChunkingConfig
    from tempscale_rag.ranking.documents import DOC_SCORES

    parser = subparsers.add_parser(
        "calibrate",
        help="Choose a tau per chunk size (or length bucket) and write a calibration file.",
        description="Choose the tau of each chunk size of the indexing pipeline for this model and corpus (every "
        "size is its own length bucket; default sizes "
        f"{','.join(map(str, ChunkingConfig().sizes))}, or --chunk-tokens), or of each length bucket with "
        "--buckets (the one-vector protocol). Without --dev the label-free 'spread' criterion is used: each size "
        "(bucket) gets the tau whose embeddings' spread on texts of that length comes closest to that of short "
        "texts at tau = 1 (the smallest chunk size, or --reference-tokens), i.e. the least collapsed one (it beat "
        "the baseline on QMSum and BAMBOO; see eval-results/README.md; the 'self' pseudo-query criterion helped "
        "less and is kept as an option). With --dev (a labelled BEIR folder) the taus are searched to maximise "
        "nDCG@10 on it, documents ranked from their chunks by --doc-score. The file records the chunk sizes with "
        "their taus and the buckets they map to; it is loaded by `index --calibration`, `eval --calibration` and "
        "both integrations.",
    )
    add_argument(
        parser, "corpus", metavar="CORPUS", help="A folder of .txt/.md files, a BEIR folder or a corpus.jsonl."
    )
    add_argument(parser, "--dev", default=None, metavar="DATASET", help="Labelled BEIR folder for the dev search.")
    add_argument(
        parser,
        "--criterion",
        choices=("self", "spread", "dev"),
        default=None,
        help="Selection criterion (default: dev with --dev, else spread).",
    )
    add_argument(
        parser,
        "--chunk-tokens",
        default=None,
        metavar="SIZES",
        help="Chunk sizes to calibrate, e.g. '64,128,256' (taus given as SIZE:TAU are replaced; default: the "
        "sizes `index` uses).",
    )
    add_argument(
        parser,
        "--chunk-overlap-tokens",
        type=int,
        default=None,
        metavar="N",
        help="Chunk overlap recorded with the sizes (default: min(32, size // 8) per size).",
    )
    add_argument(
        parser,
        "--doc-score",
        default=DEFAULT_DOC_SCORE,
        choices=DOC_SCORES,
        help="Document score of the dev/self search over chunk sizes.",
    )
    add_argument(
        parser,
        "--reference-tokens",
        type=int,
        default=None,
        metavar="N",
        help="spread over chunk sizes: length of the short reference texts (default: the smallest size, which "
        "then keeps tau = 1; 32 with a single size).",
    )
    add_argument(
        parser,
        "--buckets",
        dest="edges",
        default=None,
        metavar="SPEC",
        help="Calibrate these length buckets instead of chunk sizes, e.g. '0-128:1,128-256:1,256-:1' (taus "
        "ignored; 'default' for the package's buckets).",
    )
    add_argument(parser, "--taus", type=float, nargs="+", default=None, help="Candidate taus (default 1.0 ... 0.6).")
    add_argument(parser, "--max-seq-length", dest="window", type=int, default=None, metavar="N", help="Model window.")
    add_argument(
        parser,
        "--long-text",
        default="truncate",
        choices=("truncate", "chunk_mean"),
        help="Long-text policy (--buckets only).",
    )
    add_argument(parser, "--rounds", type=int, default=2, help="Coordinate-search passes (self, dev).")
    add_argument(parser, "--pseudo-queries", type=int, default=300, help="Pseudo-queries of the 'self' criterion.")
    add_argument(parser, "--per-length", type=int, default=48, help="Texts per length of the 'spread' criterion.")
    add_argument(parser, "--seed", type=int, default=0, help="Sampling seed.")
    add_argument(parser, "--limit-queries", type=int, default=None, metavar="N", help="Dev queries sampled.")
    add_argument(parser, "--split-file", default=None, metavar="TSV", help="Dev: doc-id<TAB>split file.")
    add_argument(parser, "--split", default=None, help="Dev: keep queries whose relevant documents are in this split.")
    add_argument(
        parser, "--out", dest="calibration_out", default="calibration.json", metavar="FILE", help="Calibration file."
    )
    add_argument(parser, "--json", action="store_true", help="Print the calibration file's content on stdout.")
    _add_model_flags(parser)
    parser.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    """Run `tempscale-rag calibrate`."""
    from tempscale_rag.calibration import (
        DEFAULT_TAU_GRID,
        calibrate_dev,
        calibrate_sizes,
        calibrate_spread,
        chunking_calibration,
        pseudo_query_dataset,
    )
    from tempscale_rag.config import DEFAULT_BUCKETS, ChunkingConfig, parse_buckets
    from tempscale_rag.diagnostics.collapse import read_corpus
    from tempscale_rag.evaluation.runner import VECTOR, EvalTask, RetrievalEvaluator

    criterion = args.criterion or ("dev" if args.dev else "spread")
    if criterion == "dev" and not args.dev:
        raise ValueError("--criterion dev needs --dev DATASET (a labelled BEIR folder)")
    if args.dev and criterion != "dev":
        raise ValueError(f"--dev is only used by --criterion dev, not {criterion}")
    by_size = args.edges is None
    if not by_size and (args.chunk_tokens is not None or args.chunk_overlap_tokens is not None):
        raise ValueError("--buckets calibrates length buckets; leave out --chunk-tokens/--chunk-overlap-tokens")
    if not by_size and args.reference_tokens is not None:
        raise ValueError("--reference-tokens is for chunk sizes; leave it out with --buckets")
    chunking: ChunkingConfig | None = None
    if by_size:
        try:
            chunking = ChunkingConfig.parse(
                args.chunk_tokens or ",".join(map(str, ChunkingConfig().sizes)),
                overlap_tokens=args.chunk_overlap_tokens,
                doc_score=args.doc_score,
            )
        except ValueError as exc:
            raise ValueError(f"invalid --chunk-tokens: {exc}".replace("\n", " ")) from None
    base = _base_config(args, max_seq_length=args.window, long_text=args.long_text)
    if by_size:
        edges = []
    elif args.edges.strip().lower() == "default":
        edges = list(DEFAULT_BUCKETS)
    else:
        edges = parse_buckets(args.edges)
    taus = tuple(args.taus) if args.taus else DEFAULT_TAU_GRID
    for tau in taus:
        _base_config(args, temperature=tau)  # validates each candidate (finite, > 0)
    encoder = _load_encoder(base)
    n_special = encoder.count_tokens([""])[0]
    if chunking is not None:
        edges = list(chunking.buckets(n_special))

    if criterion == "spread":
        if chunking is not None:
            calibration = calibrate_sizes(
                encoder,
                read_corpus(args.corpus),
                chunking,
                taus=taus,
                per_length=args.per_length,
                seed=args.seed,
                reference_tokens=args.reference_tokens,
            )
        else:
            calibration = calibrate_spread(
                encoder, read_corpus(args.corpus), buckets=edges, taus=taus, per_length=args.per_length, seed=args.seed
            )
    else:
        if criterion == "dev":
            dev_args = argparse.Namespace(**{**vars(args), "lengths": None, "n_docs": 100, "n_queries": 50})
            task = load_task(args.dev, dev_args, split_file=args.split_file, split=args.split)
        else:
            dataset = pseudo_query_dataset(
                encoder, read_corpus(args.corpus), n_queries=args.pseudo_queries, seed=args.seed
            )
            task = EvalTask("pseudo-queries", "beir", {"all": dataset}, {"corpus": str(args.corpus)})
        evaluator = RetrievalEvaluator(encoder, show_progress=_show_progress(args))
        doc_score = VECTOR if chunking is None else args.doc_score
        calibration = calibrate_dev(
            encoder,
            lambda candidate: evaluator.score(candidate, task, doc_score=doc_score, chunking=chunking),
            buckets=edges,
            taus=taus,
            rounds=args.rounds,
            criterion=criterion,
        )
        calibration.measurements["task"] = {"name": task.name, **task.info}
        calibration.measurements["metric"] = task.main_metric
        calibration.measurements["doc_score"] = doc_score
        if chunking is not None:
            calibration = chunking_calibration(calibration, chunking, n_special)
    calibration.measurements["corpus"] = str(Path(args.corpus).resolve())
    path = calibration.save(args.calibration_out)
    if args.json:
        _print_json(json.loads(path.read_text(encoding="utf-8")))
    else:
        what = "chunk sizes" if chunking is not None else f"buckets, {args.long_text}"
        print(f"Calibrated {calibration.model} ({criterion}, window {encoder.window}, {what}): {calibration.spec()}")
        if "best_score" in calibration.measurements:
            m = calibration.measurements
            print(f"{m['metric']}: {m['score_at_tau_1'] * 100:.2f} at tau = 1 -> {m['best_score'] * 100:.2f}")
        print(f"Wrote {path}; use it with --calibration {path}")
    return 0
