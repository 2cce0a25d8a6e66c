"""LangChain's standard embeddings test suites (langchain-tests), run offline on the bundled model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_socket
from langchain_tempscale import TempScaleEmbeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from tempscale_rag import BUNDLED_MODEL

PARAMS: dict[str, Any] = {"model_name": BUNDLED_MODEL, "device": "cpu"}


@pytest.fixture
def offline() -> Iterator[None]:
    """No network during the suites, as partner packages run them with `--disable-socket --allow-unix-socket`.

    Unix sockets stay allowed: asyncio's event loop wakes itself through a socketpair.
    """
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()


@pytest.mark.usefixtures("offline")
class TestTempScaleEmbeddingsUnit(EmbeddingsUnitTests):
    # `init_from_env_params` is left empty (its test skips): there is no API key or endpoint to read from the
    # environment.

    @property
    def embeddings_class(self) -> type[TempScaleEmbeddings]:
        return TempScaleEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return PARAMS


@pytest.mark.usefixtures("offline")
class TestTempScaleEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[TempScaleEmbeddings]:
        return TempScaleEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return PARAMS
