"""tempscale-rag: long-document embeddings with length-routed attention temperature (TempScale).

The engine is `TempScaleEncoder`; `Index` is an index folder with the engine that built it (open, add, search);
`TempScaleConfig` is the one configuration object shared by the API, the CLI and index manifests.
Integrations live in `llama_index.embeddings.tempscale` and `langchain_tempscale`.

Names are imported on first use, so `import tempscale_rag.stores` or the CLI's `--help` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tempscale_rag.attention import (
        SUPPORTED_ARCHITECTURES,
        AttentionTemperature,
        UnsupportedArchitectureError,
        patch_attention_temperature,
    )
    from tempscale_rag.config import (
        BUNDLED_MODEL,
        DEFAULT_BUCKETS,
        Bucket,
        ChunkingConfig,
        TempScaleConfig,
        parse_buckets,
    )
    from tempscale_rag.encoder import BucketReport, EncodeReport, TempScaleEncoder
    from tempscale_rag.index import Index
    from tempscale_rag.routing import LengthRouter

_EXPORTS = {
    "SUPPORTED_ARCHITECTURES": "tempscale_rag.attention",
    "AttentionTemperature": "tempscale_rag.attention",
    "UnsupportedArchitectureError": "tempscale_rag.attention",
    "patch_attention_temperature": "tempscale_rag.attention",
    "BUNDLED_MODEL": "tempscale_rag.config",
    "DEFAULT_BUCKETS": "tempscale_rag.config",
    "Bucket": "tempscale_rag.config",
    "ChunkingConfig": "tempscale_rag.config",
    "TempScaleConfig": "tempscale_rag.config",
    "parse_buckets": "tempscale_rag.config",
    "BucketReport": "tempscale_rag.encoder",
    "EncodeReport": "tempscale_rag.encoder",
    "TempScaleEncoder": "tempscale_rag.encoder",
    "Index": "tempscale_rag.index",
    "LengthRouter": "tempscale_rag.routing",
}

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_BUCKETS",
    "SUPPORTED_ARCHITECTURES",
    "AttentionTemperature",
    "Bucket",
    "BucketReport",
    "ChunkingConfig",
    "EncodeReport",
    "Index",
    "LengthRouter",
    "TempScaleConfig",
    "TempScaleEncoder",
    "UnsupportedArchitectureError",
    "parse_buckets",
    "patch_attention_temperature",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tempscale_rag' has no attribute {name!r}")
