"""This package's tests share the repository's fixtures (the real bundled model, loaded once per session)."""

from tests.conftest import encoder

__all__ = ["encoder"]
