"""`python -m tempscale_rag` runs the CLI."""

from tempscale_rag.cli import entrypoint

entrypoint()
