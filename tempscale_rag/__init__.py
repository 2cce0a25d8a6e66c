"""tempscale-rag: long-document embeddings with length-routed attention temperature (TempScale).

The engine is `TempScaleEncoder`; `TempScaleConfig` is the one configuration object shared by the API, the CLI and
index manifests. Integrations live in `llama_index.embeddings.tempscale` and `langchain_tempscale`.
"""

from tempscale_rag.attention import (
    SUPPORTED_ARCHITECTURES,
    AttentionTemperature,
    UnsupportedArchitectureError,
    patch_attention_temperature,
)
from tempscale_rag.config import BUNDLED_MODEL, DEFAULT_BUCKETS, Bucket, TempScaleConfig, parse_buckets
from tempscale_rag.encoder import BucketReport, EncodeReport, TempScaleEncoder
from tempscale_rag.routing import LengthRouter

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_BUCKETS",
    "SUPPORTED_ARCHITECTURES",
    "AttentionTemperature",
    "Bucket",
    "BucketReport",
    "EncodeReport",
    "LengthRouter",
    "TempScaleConfig",
    "TempScaleEncoder",
    "UnsupportedArchitectureError",
    "parse_buckets",
    "patch_attention_temperature",
]
