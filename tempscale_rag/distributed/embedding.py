"""Embedding on a Ray cluster: one `TempScaleEncoder` per actor, loaded once, fed in batches.

`RayEmbedder` drives a pool of `EncoderActor`s with Ray core (the indexer uses it: it needs every result back, exactly
once, keyed by the chunks it holds); `embed_dataset` runs the same actor class inside Ray Data's `map_batches` for
teams that already hold their texts in a `ray.data.Dataset`.

With GPU actors, texts are tokenised in Ray CPU tasks (`tokenize_task`, one CPU each, spread by Ray over the cluster)
and the actors get token ids (`TokenizedTexts`), so a GPU actor's process only runs the model and several actors on
one host do not split its tokenising CPUs between fixed pools: the tasks go wherever CPUs are free. In Ray Data the
tokenising is a task stage before the actor stage, autoscaled by Ray Data. The ids are those the engine would make
itself, so the vectors are the same (`RaySettings.tokenize_in_tasks`).

Each actor is started with `max_restarts` and `max_task_retries`: when one dies (a node lost, a process killed, an
out-of-memory kill), Ray starts it again, it loads the model again, and the calls it held run again, so the caller
still gets one result per batch. Vectors do not depend on which actor or batch embeds a text (the engine's batches
only group texts of equal padded length), so a retried batch gives the same vectors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from tempscale_rag.config import TempScaleConfig
from tempscale_rag.distributed.cluster import cluster_resources, connect, require_ray
from tempscale_rag.distributed.settings import DEFAULT_CPU_BATCH_ROWS, DEFAULT_GPU_BATCH_ROWS, RaySettings
from tempscale_rag.encoder import EncodeReport, TempScaleEncoder
from tempscale_rag.planning import TokenizedTexts
from tempscale_rag.tokenizing import tokenize_texts

logger = logging.getLogger(__name__)

K = TypeVar("K")

CALL_BATCHES = 8
"""The largest actor call `RayEmbedder.encode` makes, in units of `batch_rows`."""

IDS_COLUMN = "__tempscale_token_ids"
"""Ray Data: the column the tokenising stage adds (one id array per row) and the actor stage removes."""


def tokenize_task(tokenizer_json: str, texts: list[str], prompt: str) -> TokenizedTexts:
    """The CPU stage: texts to the engine's token ids, in a Ray task that holds one CPU.

    The Rust tokenizer would otherwise start a thread per core of the node in every task; one task per CPU is the
    parallelism here.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return tokenize_texts(tokenizer_json, texts, prompt)


def _tokenize_batch(batch: dict[str, Any], *, tokenizer_json: str, column: str, prompt: str) -> dict[str, Any]:
    """Ray Data's tokenising stage (tasks): adds `IDS_COLUMN` to a batch (the tokenizer is built once per process)."""
    if column not in batch:
        raise KeyError(f"the dataset has no column {column!r} (it has {sorted(batch)}); pass column=...")
    tokens = tokenize_task(tokenizer_json, list(np.asarray(batch[column]).tolist()), prompt)
    out = dict(batch)
    ids = np.empty(len(tokens), dtype=object)
    ids[:] = tokens.split()
    out[IDS_COLUMN] = ids
    return out


class EncoderActor:
    """Holds one engine (the model loaded once) inside a Ray actor; also a Ray Data `map_batches` callable class.

    Args:
        config: The engine configuration as JSON (`TempScaleConfig.model_dump_json()`), so every actor, including a
            restarted one, builds the same engine.
        column: Ray Data only: the column holding the texts.
        output_column: Ray Data only: the column the vectors go to.
        query: Ray Data only: embed the texts as queries.
    """

    def __init__(
        self, config: str, *, column: str = "text", output_column: str = "vector", query: bool = False
    ) -> None:
        self.encoder = TempScaleEncoder(config=TempScaleConfig.model_validate_json(config))
        self.column = column
        self.output_column = output_column
        self.query = query

    def describe(self) -> dict[str, Any]:
        """Model name, dimension and device of this actor's engine, and its process id."""
        return {
            "pid": os.getpid(),
            "model": self.encoder.model_name,
            "dimension": self.encoder.dimension,
            "device": str(self.encoder.device),
        }

    def tokenizer_json(self) -> str | None:
        """The engine's Rust tokenizer (what `tokenize_task` needs), or None for a model without one."""
        rust = self.encoder.rust_tokenizer
        return None if rust is None else str(rust.to_str())

    def encode(self, texts: list[str]) -> tuple[np.ndarray, EncodeReport]:
        """Embed `texts` as documents; returns the vectors and the call's report."""
        return self.encoder.encode_with_report(texts, query=self.query)

    def encode_tokens(self, *pieces: TokenizedTexts) -> tuple[np.ndarray, EncodeReport]:
        """Embed documents given as token ids, in pieces (one per tokenising task, in order), as one call."""
        return self.encoder.encode_tokens_with_report(TokenizedTexts.concat(list(pieces)), query=self.query)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data: add `output_column` (a float32 matrix) computed from `column` (or its ids) to a batch of rows."""
        out = dict(batch)
        if IDS_COLUMN in out:
            tokens = TokenizedTexts.from_lists(list(out.pop(IDS_COLUMN)))
            vectors, _report = self.encoder.encode_tokens_with_report(tokens, query=self.query)
        elif self.column in batch:
            texts = list(np.asarray(batch[self.column]).tolist())
            vectors, _report = self.encoder.encode_with_report(texts, query=self.query)
        else:
            raise KeyError(f"the dataset has no column {self.column!r} (it has {sorted(batch)}); pass column=...")
        out[self.output_column] = vectors
        return out


@dataclass(frozen=True)
class PoolPlan:
    """The resolved size of an actor pool (from `RaySettings` and the cluster's resources)."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: int
    batch_rows: int
    tokenize_workers: int | None
    tokenize_in_tasks: bool = False

    def actor_config(self, config: TempScaleConfig) -> TempScaleConfig:
        """The engine configuration an actor runs: the user's, with tokenizer processes fitted to its CPUs."""
        if self.tokenize_workers is None or config.tokenize_workers is not None:
            return config
        return config.model_copy(update={"tokenize_workers": self.tokenize_workers})


def plan_pool(settings: RaySettings, *, reserve_cpus: bool = True) -> PoolPlan:
    """Size the actor pool for the connected cluster.

    Args:
        settings: The requested sizes (None fields are chosen from the cluster's CPUs and GPUs).
        reserve_cpus: Keep CPUs free for reading and chunking tasks (indexing); embedding a dataset needs none.

    Raises:
        ValueError: If the request does not fit the cluster.
    """
    cpus, gpus = cluster_resources()
    gpus_per_actor = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    if settings.actors is not None:
        actors = settings.actors
    elif gpus_per_actor > 0:
        actors = max(1, int(gpus // gpus_per_actor))
    else:
        actors = 1
    if gpus_per_actor > 0 and actors * gpus_per_actor > gpus + 1e-9:
        raise ValueError(
            f"{actors} embedding actors with {gpus_per_actor:g} GPU each need {actors * gpus_per_actor:g} GPUs; "
            f"the Ray cluster has {gpus:g}: lower --ray-actors"
        )
    reserved = max(1, cpus // 8) if reserve_cpus else 0
    in_tasks = settings.tokenize_in_tasks if settings.tokenize_in_tasks is not None else gpus_per_actor > 0
    if settings.cpus_per_actor is not None:
        cpus_per_actor = settings.cpus_per_actor
    elif gpus_per_actor > 0 and not in_tasks:
        cpus_per_actor = max(1, (cpus - reserved) // actors)
    else:
        cpus_per_actor = 1
    if actors * cpus_per_actor + reserved > cpus:
        raise ValueError(
            f"{actors} embedding actors with {cpus_per_actor} CPUs each leave fewer than {reserved} of the cluster's "
            f"{cpus} CPUs for reading files: lower --ray-actors"
        )
    if in_tasks and actors * cpus_per_actor + reserved >= cpus:
        in_tasks = False  # the actors hold every CPU: no task could run, so they tokenise themselves
    batch_rows = settings.batch_rows or (DEFAULT_GPU_BATCH_ROWS if gpus_per_actor > 0 else DEFAULT_CPU_BATCH_ROWS)
    # A GPU actor tokenises in one process per CPU it holds (the engine's default would count the whole host's);
    # fed ids by tasks, it needs none.
    tokenize_workers = (0 if in_tasks else cpus_per_actor) if gpus_per_actor > 0 else None
    return PoolPlan(actors, gpus_per_actor, cpus_per_actor, batch_rows, tokenize_workers, in_tasks)


class RayEmbedder:
    """A pool of embedding actors on a Ray cluster, each with its own `TempScaleEncoder`.

    Connects to the cluster in `settings.address` (or starts a local one) and starts the actors; each loads the
    model once. Close it (or use it as a context manager) to stop the actors and, if it started one, the cluster.

    Args:
        config: The engine configuration (None: the defaults, the bundled model).
        settings: Cluster address and pool size.
        reserve_cpus: Leave CPUs free for reading tasks (True when indexing).

    Raises:
        ImportError: If Ray is not installed (the message names the `[ray]` extra).
        ValueError: If the pool does not fit the cluster.
    """

    def __init__(
        self,
        config: TempScaleConfig | None = None,
        settings: RaySettings | None = None,
        *,
        reserve_cpus: bool = True,
    ) -> None:
        self.settings = settings or RaySettings()
        self.config = config or TempScaleConfig()
        ray = require_ray()
        self._started_ray = connect(self.settings)
        self._actors: list[Any] = []
        try:
            self.plan = plan_pool(self.settings, reserve_cpus=reserve_cpus)
            remote = ray.remote(EncoderActor).options(
                num_cpus=self.plan.cpus_per_actor,
                num_gpus=self.plan.gpus_per_actor,
                max_restarts=self.settings.max_restarts,
                max_task_retries=-1 if self.settings.max_restarts != 0 else 0,
            )
            config_json = self.plan.actor_config(self.config).model_dump_json()
            self._actors = [remote.remote(config_json) for _ in range(self.plan.actors)]
            described = ray.get([actor.describe.remote() for actor in self._actors])
        except BaseException:
            self.close()
            raise
        self.model_name: str = described[0]["model"]
        self.dimension: int = int(described[0]["dimension"])
        self.devices: list[str] = [d["device"] for d in described]
        self.last_report = EncodeReport()
        self._tokenizer: Any = None  # with tokenising tasks: the tokenizer JSON in Ray's object store
        if self.plan.tokenize_in_tasks:
            tokenizer_json = ray.get(self._actors[0].tokenizer_json.remote())
            if tokenizer_json is not None:  # a slow tokenizer: the actors tokenise themselves
                self._tokenizer = ray.put(tokenizer_json)
        logger.info("%d embedding actors on %s", len(self._actors), ", ".join(self.devices))

    @property
    def actors(self) -> list[Any]:
        """The actor handles (for monitoring; a killed actor is restarted by Ray)."""
        return list(self._actors)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents across the pool; rows follow the input order, `last_report` totals the calls.

        Args:
            texts: The texts.

        Returns:
            A float32 array of shape `(len(texts), dimension)`.
        """
        texts = list(texts)
        step = self.call_rows(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        report = EncodeReport()
        batches = ((start, texts[start : start + step]) for start in range(0, len(texts), step))
        for start, vectors, part in self.imap_unordered(batches):
            out[start : start + len(vectors)] = vectors
            report.merge(part)
        self.last_report = report
        return out

    def call_rows(self, n: int) -> int:
        """Texts per actor call when `encode` splits a list of `n` texts.

        Every call pays a pipeline fill and drain (the GPU waits while the first part is tokenised, and each length
        group's last, part-filled batch runs alone), so a list goes out in the fewest calls that split it equally
        between the actors; a call is capped at `CALL_BATCHES` x `batch_rows` texts to bound the objects Ray moves.
        """
        actors = max(1, len(self._actors))
        per_actor = -(-max(1, n) // actors)
        calls_each = -(-per_actor // (self.plan.batch_rows * CALL_BATCHES))
        return max(1, -(-per_actor // calls_each))

    def imap_unordered(self, batches: Iterable[tuple[K, list[str]]]) -> Iterator[tuple[K, np.ndarray, EncodeReport]]:
        """Embed `(key, texts)` batches; yields `(key, vectors, report)` as batches finish, in any order.

        Batches are pulled from `batches` lazily, `settings.in_flight` per actor at most, always to the actor with the
        fewest queued, so a slow reader upstream and a slow actor downstream both hold back only themselves.

        Raises:
            RuntimeError: If an actor died more often than `settings.max_restarts` allows.
        """
        ray = require_ray()
        from ray.exceptions import RayActorError, RayTaskError

        pending: dict[Any, tuple[K, int]] = {}
        queued = [0] * len(self._actors)
        source = iter(batches)
        exhausted = False
        while True:
            while not exhausted and min(queued) < self.settings.in_flight:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                key, texts = item
                slot = queued.index(min(queued))
                pending[self._submit(self._actors[slot], list(texts))] = (key, slot)
                queued[slot] += 1
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, slot = pending.pop(ready[0])
            queued[slot] -= 1
            try:
                vectors, report = ray.get(ready[0])
            except (RayActorError, RayTaskError) as exc:
                raise RuntimeError(f"an embedding actor failed and could not be recovered: {exc}") from exc
            yield key, vectors, report

    def _submit(self, actor: Any, texts: list[str]) -> Any:
        """One actor call; with tokenising tasks, the texts go to CPU tasks first and the actor gets their ids.

        The actor call takes the tasks' results as arguments, so Ray runs it once they are done and moves the ids
        from the tasks' nodes to the actor's; the driver never waits for them.
        """
        if self._tokenizer is None:
            return actor.encode.remote(texts)
        ray = require_ray()
        task = ray.remote(tokenize_task).options(num_cpus=1)
        step = self.settings.tokenize_task_rows
        prompt = self.config.document_prompt
        pieces = [task.remote(self._tokenizer, texts[a : a + step], prompt) for a in range(0, len(texts), step)]
        return actor.encode_tokens.remote(*pieces)

    def close(self) -> None:
        """Stop the actors, and the Ray connection if this embedder started it."""
        if not self._actors and not self._started_ray:
            return
        ray = require_ray()
        if ray.is_initialized():
            for actor in self._actors:
                ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_dataset(
    dataset: Any,
    column: str = "text",
    *,
    output_column: str = "vector",
    config: TempScaleConfig | None = None,
    settings: RaySettings | None = None,
    query: bool = False,
) -> Any:
    """Add a vector column to a `ray.data.Dataset`, computed by the engine in a pool of actors (Ray Data).

    The returned dataset is lazy, like every Ray Data transform: it runs when consumed (`write_parquet`,
    `iter_batches`, `materialize`). Each actor loads the model once; on a GPU cluster there is one actor per GPU.

    Args:
        dataset: The user's dataset; its rows keep every column.
        column: The column of texts to embed.
        output_column: The column the float32 vectors go to (a tensor column of shape `(dimension,)`).
        config: The engine configuration (None: defaults, the bundled model).
        settings: Pool size and batch rows (`address` is used only when Ray is not initialised yet).
        query: Embed the texts as queries (query prompt and temperature).

    Returns:
        The dataset with `output_column` added.

    Example:
        >>> ds = ray.data.read_parquet("s3://bucket/chunks/")                     # doctest: +SKIP
        >>> embed_dataset(ds, "text").write_parquet("s3://bucket/vectors/")        # doctest: +SKIP
    """
    ray = require_ray()
    settings = settings or RaySettings()
    connect(settings)
    plan = plan_pool(settings, reserve_cpus=False)
    config = config or TempScaleConfig()
    config_json = plan.actor_config(config).model_dump_json()
    tokenizer_json = tokenizer_json_of(config.model) if plan.tokenize_in_tasks else None
    if tokenizer_json is not None:
        prompt = config.query_prompt if query else config.document_prompt
        dataset = dataset.map_batches(
            _tokenize_batch,
            fn_kwargs={"tokenizer_json": tokenizer_json, "column": column, "prompt": prompt},
            batch_size=settings.tokenize_task_rows,
            batch_format="numpy",
            num_cpus=1,
        )
    return dataset.map_batches(
        EncoderActor,
        fn_constructor_kwargs={"config": config_json, "column": column, "output_column": output_column, "query": query},
        batch_size=plan.batch_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor or None,
    )


def tokenizer_json_of(model: str) -> str | None:
    """The Rust tokenizer of a model (a `TempScaleConfig.model`) loaded without the model; None if it has none."""
    from transformers import AutoTokenizer

    from tempscale_rag.config import BUNDLED_MODEL
    from tempscale_rag.models import bundled_model_path
    from tempscale_rag.tokenizing import rust_tokenizer_copy

    source = bundled_model_path() if model == BUNDLED_MODEL else model
    rust = rust_tokenizer_copy(AutoTokenizer.from_pretrained(source))
    return None if rust is None else str(rust.to_str())
