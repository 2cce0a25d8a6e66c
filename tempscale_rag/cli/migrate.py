"""`tempscale-rag qdrant-upload`: move an embedded Qdrant index (Qdrant Edge) to a Qdrant server, without re-embedding.

A thin command over `tempscale_rag.stores.qdrant.migrate.upload_index`: every point is copied by id with its vectors
and payload into collections made as `tempscale-rag index --qdrant-url` makes them, and a new index folder gets the
old manifest with the server as its backend. The embedded index is left as it was.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from tempscale_rag.cli.options import EXIT_OK, add_argument

DEFAULT_INDEX = "tempscale-index"


def register(subparsers: Any) -> None:
    """Add the `qdrant-upload` subcommand."""
    upload = subparsers.add_parser(
        "qdrant-upload",
        help="Copy an embedded Qdrant (Edge) index to a Qdrant server, without re-embedding.",
        description="Copy every chunk of an embedded Qdrant index (dense vectors, BM25 sparse vectors, payloads, "
        "document points, file fingerprints) to a Qdrant server, into collections made as `tempscale-rag index "
        "--qdrant-url` makes them, and write a new index folder whose manifest points at the server. Nothing is "
        "re-embedded and the embedded index is not changed. The API key comes from QDRANT_API_KEY. An interrupted "
        "upload is finished by running the same command again.",
    )
    upload.add_argument(
        "index", nargs="?", default=DEFAULT_INDEX, help=f"The embedded index's folder (default: {DEFAULT_INDEX})."
    )
    where = upload.add_mutually_exclusive_group(required=True)
    add_argument(where, "--url", "--qdrant-url", dest="url", default=None, help="The Qdrant server's URL.")
    add_argument(
        where,
        "--qdrant-path",
        dest="qdrant_path",
        default=None,
        help="Instead of a server, a qdrant-client local-mode folder (to try the upload without a server).",
    )
    add_argument(
        upload,
        "--to",
        dest="to",
        default=None,
        help="The new index folder (missing or empty).",
        shown_default="INDEX-server",
    )
    add_argument(
        upload, "--collection", default=None, help="Collection on the server.", shown_default="the index's own"
    )
    add_argument(upload, "--batch-size", type=int, default=256, help="Points per upload request.")
    add_argument(upload, "--json", action="store_true", help="Print the report as JSON.")
    upload.set_defaults(run=run_upload, loads_model=False)


def run_upload(args: argparse.Namespace) -> int:
    """Upload the index and say how to search it."""
    from tempscale_rag.stores.qdrant.migrate import upload_index

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    source = Path(args.index)
    target = Path(args.to) if args.to else source.with_name(source.name + "-server")
    show = sys.stderr.isatty() and not getattr(args, "quiet", False)

    def progress(what: str, done: int, total: int) -> None:
        if show:
            print(f"\r{what}: {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)

    report = upload_index(
        source,
        target,
        url=args.url,
        path=args.qdrant_path,
        collection=args.collection,
        batch_size=args.batch_size,
        progress=progress,
    )
    location_flag = f"--qdrant-url {shlex.quote(args.url)}" if args.url else ""
    search = f"tempscale-rag search QUESTION --out {shlex.quote(str(report.folder))} {location_flag}".strip()
    if args.json:
        print(
            json.dumps(
                {
                    "index": str(report.folder),
                    "location": report.location,
                    "collection": report.collection,
                    "chunks": report.chunks,
                    "lexical_chunks": report.lexical_chunks,
                    "documents": report.documents,
                    "files": report.sources,
                    "search": search,
                },
                indent=2,
            )
        )
        return EXIT_OK
    lexical = "" if report.lexical_chunks is None else f" ({report.lexical_chunks} with BM25 vectors)"
    print(
        f"uploaded {report.chunks} chunks{lexical}, {report.documents} document points and {report.sources} files "
        f"to collection {report.collection!r} at {report.location}; nothing was re-embedded"
    )
    print(f"new index  {report.folder} (its manifest points at {report.location}; {source} is unchanged)")
    print(f"search it  {search}")
    return EXIT_OK
