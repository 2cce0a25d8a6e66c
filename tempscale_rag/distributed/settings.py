"""`RaySettings`: where the Ray cluster is and how the embedding actor pool is sized. Importing this loads no Ray."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CPU_BATCH_ROWS = 256
"""Texts per actor call on CPU actors: small, so the work spreads over actors and a lost call costs little."""

DEFAULT_GPU_BATCH_ROWS = 16_384
"""Texts per actor call on GPU actors. Each engine call ends with partial batches (one per temperature and padded
shape) and starts its tokenizer pipeline afresh; 16k texts (about 4M tokens of mixed-length chunks, a second of an
H200) keep that tail small while two calls queued per actor keep the GPU busy."""


class RaySettings(BaseModel):
    """How indexing and embedding spread over a Ray cluster (`tempscale-rag index --ray`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        default=None,
        description="Ray cluster address ('auto', 'ray://head:10001', 'host:6379'); None starts a local cluster.",
    )
    actors: int | None = Field(
        default=None,
        ge=1,
        description="Embedding actors, each loading the model once; None: one per GPU of the cluster, else 1.",
    )
    gpus_per_actor: float | None = Field(
        default=None,
        ge=0,
        description="GPUs each embedding actor reserves; None: 1 when the cluster has GPUs, else 0 (CPU actors).",
    )
    cpus_per_actor: int | None = Field(
        default=None,
        ge=1,
        description="CPUs each embedding actor reserves (a GPU actor that tokenises itself uses one process per CPU); "
        "None: 1 for CPU actors and for GPU actors fed by tokenising tasks, else the cluster's CPUs less one per 8 for "
        "reading, shared among the GPU actors.",
    )
    batch_rows: int | None = Field(
        default=None,
        ge=1,
        description=f"Texts per actor call; None: {DEFAULT_GPU_BATCH_ROWS} on GPU actors, {DEFAULT_CPU_BATCH_ROWS} on "
        "CPU actors.",
    )
    tokenize_in_tasks: bool | None = Field(
        default=None,
        description="Tokenise in Ray CPU tasks spread over the cluster's CPUs and send the embedding actors token ids "
        "(they then run only the model); None: on GPU actors (with a fast tokenizer), off on CPU actors, whose forward "
        "pass needs the CPUs.",
    )
    tokenize_task_rows: int = Field(
        default=2_048, ge=1, description="Texts per tokenising task (with tokenize_in_tasks)."
    )
    in_flight: int = Field(default=2, ge=1, description="Calls queued per actor, so it never waits for the driver.")
    files_per_task: int = Field(default=8, ge=1, description="Files read and chunked by one Ray task.")
    max_restarts: int = Field(
        default=3, ge=-1, description="Times a dead embedding actor is restarted (its calls are retried); -1: always."
    )
    writers: int = Field(
        default=4,
        ge=1,
        description="Concurrent writers to a Qdrant server (threads of the driver, each with its own connection, each "
        "storing whole files); FAISS and Qdrant's local mode have one writer.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of a local cluster started here; None: all of this machine's."
    )
