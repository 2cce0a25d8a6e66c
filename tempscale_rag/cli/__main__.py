"""`python -m tempscale_rag.cli` runs the CLI."""

from tempscale_rag.cli import entrypoint

entrypoint()
