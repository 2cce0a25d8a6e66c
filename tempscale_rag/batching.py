"""Running planned parts on the model: segments grouped by (tau, padded shape), batches cut by a padded-token budget.

A group's segments run in input order, in batches of `budget // shape` segments, as soon as the group holds a full
batch; the last, partial batch of each group runs once every part is in. So the batches, and a text's vector, do not
depend on how the call was cut into parts or on which other texts share the call (sentence-transformers#2312).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from tempscale_rag.models import LoadedModel, transformer_model
from tempscale_rag.planning import Part, padded_lengths

CPU_BATCH_TOKENS = 2_048
"""Default padded-token budget per forward pass on the CPU. Measured on 2 cores with MiniLM: 2048 beat 4096, 8192
and 16384 by 4% (mixed lengths) to 15% (512-token chunks); CPU attention materialises the score matrices, so
smaller batches stay in cache."""

GPU_MAX_BATCH_TOKENS = 1 << 17
"""Cap of the GPU's padded-token budget. Smaller batches fill sooner, so more of the GPU's work overlaps tokenisation
and less is left for the last, partial batches. Measured end to end in bf16 on 7.3M mixed-length tokens: on an H200,
256k-token batches beat 1M-token ones (MiniLM-L6 4.2M vs 3.8M tokens/s, bge-base 1.67M vs 1.55M); on an H100 with
tokenizer processes, 128k beat 256k (MiniLM 4.4M vs 4.3M, bge-base 1.73M vs 1.69M); 32k was slower."""


class _Group:
    """Segments waiting for a batch: one (tau, padded shape), in input order, as (part, local indices) runs."""

    def __init__(self, per_batch: int) -> None:
        self.per_batch = per_batch
        self.size = 0
        self._runs: deque[tuple[Part, np.ndarray]] = deque()

    def add(self, part: Part, local: np.ndarray) -> None:
        self._runs.append((part, local))
        self.size += len(local)

    def take(self, n: int) -> list[tuple[Part, np.ndarray]]:
        """The next `n` segments (or all that wait, if fewer)."""
        out: list[tuple[Part, np.ndarray]] = []
        while n and self._runs:
            part, local = self._runs.popleft()
            if len(local) > n:
                self._runs.appendleft((part, local[n:]))
                local = local[:n]
            out.append((part, local))
            n -= len(local)
            self.size -= len(local)
        return out


@torch.inference_mode()
def run_parts(
    m: LoadedModel,
    parts: Iterable[Part],
    *,
    window: int,
    budget: int,
    normalize: bool,
    show_progress: bool,
    sink: Callable[[np.ndarray, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, list[Part]]:
    """Run every batch as soon as its group fills it; return segment vectors in segment order and the parts.

    With a `sink`, each batch's vectors (normalised as `config.normalize` says) are instead handed to it on the
    host with their segment numbers, one batch behind the GPU so that the sink's work overlaps the next batch,
    and the returned tensor is empty.
    """
    groups: dict[tuple[float, int], _Group] = {}
    done: list[Part] = []
    rows: list[torch.Tensor] = []  # each batch's vectors, in the order batches ran
    order: list[np.ndarray] = []  # each batch's segment numbers
    handed: deque[tuple[np.ndarray, torch.Tensor]] = deque()  # with a sink: batches not yet handed to it
    progress = tqdm(desc="Embedding", unit="batch", disable=not show_progress, leave=False)

    cuda = m.device.type == "cuda"
    previous: list[torch.cuda.Event] = []

    def run_batch(tau: float, length: int, members: list[tuple[Part, np.ndarray]]) -> None:
        features = _features(m, members, length, cuda)
        if previous:
            # transformers checks each batch's padding mask on the host (`mask.all()`), a device sync that
            # holds the GIL and so stalls the threads planning the next parts. Waiting for the previous batch
            # here first releases the GIL while the GPU works, and leaves that check nothing to wait for.
            previous.pop().synchronize()
        m.patch.set(tau)
        vectors = m.st(features)["sentence_embedding"].float()
        segments = np.concatenate([part.first_segment + local for part, local in members])
        if sink is None:
            rows.append(vectors)
            order.append(segments)
        else:
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            # Copied to pinned host memory behind the batch on the GPU's queue: done when its event is.
            handed.append((segments, vectors.to("cpu", non_blocking=cuda)))
        if cuda:
            previous.append(torch.cuda.Event())
            previous[0].record()
        if sink is not None and len(handed) > 1:
            # The previous batch's event was waited for above; the GPU is now busy with this one.
            sink(*handed.popleft())
        progress.update()

    with m.lock:
        try:
            segments = 0
            for part in parts:
                part.first_segment = segments
                segments += len(part.body)
                done.append(part)
                padded = padded_lengths(part.body + m.specials.count, window)
                keys = np.lexsort((part.tau, -padded))  # longest shapes first, input order inside a group
                edges = np.flatnonzero((np.diff(padded[keys]) != 0) | (np.diff(part.tau[keys]) != 0)) + 1
                for local in np.split(keys, edges):
                    key = (float(part.tau[local[0]]), int(padded[local[0]]))
                    group = groups.setdefault(key, _Group(per_batch=max(1, budget // key[1])))
                    group.add(part, np.sort(local))
                    while group.size >= group.per_batch:
                        run_batch(*key, group.take(group.per_batch))
            for key, group in sorted(groups.items(), key=lambda kv: -kv[0][1]):
                while group.size:
                    run_batch(*key, group.take(group.per_batch))
            if previous:
                previous.pop().synchronize()
            while sink is not None and handed:
                sink(*handed.popleft())
        finally:
            m.patch.set(1.0)
            progress.close()
    if not rows:
        return torch.empty((0, m.dimension), dtype=torch.float32, device=m.device), done
    staged = torch.cat(rows)
    index = torch.from_numpy(np.concatenate(order)).to(m.device)
    return torch.empty_like(staged).index_copy_(0, index, staged), done


def _features(
    m: LoadedModel, members: list[tuple[Part, np.ndarray]], length: int, pin: bool
) -> dict[str, torch.Tensor]:
    """Padded model inputs of one batch; only the token ids and lengths cross to the device.

    Token ids are gathered from the parts' flat arrays straight into (pinned, on GPU) host memory and copied
    without blocking; the attention mask and token type ids are built on the device.
    """
    device = m.device
    specials = m.specials
    prefix, suffix = len(specials.prefix), len(specials.suffix)
    n_rows = sum(len(local) for _part, local in members)
    ids = torch.empty((n_rows, length), dtype=torch.int64, pin_memory=pin)
    out = ids.numpy()
    out.fill(m.pad_id)
    out[:, :prefix] = specials.prefix
    lengths = np.empty(n_rows, dtype=np.int64)
    row = 0
    for part, local in members:
        body = part.body[local]
        rows = np.arange(row, row + len(local))
        width = int(body.max())
        if width:
            columns = np.arange(width)
            gather = np.minimum(part.start[local][:, None] + columns, len(part.flat) - 1)
            np.copyto(
                out[row : row + len(local), prefix : prefix + width],
                part.flat[gather],
                where=columns < body[:, None],
            )
        for j, token in enumerate(specials.suffix):
            out[rows, prefix + body + j] = token
        lengths[row : row + len(local)] = body + prefix + suffix
        row += len(local)
    lengths_t = torch.from_numpy(lengths)
    if pin:
        lengths_t = lengths_t.pin_memory()
    lengths_d = lengths_t.to(device, non_blocking=pin)
    positions = torch.arange(length, device=device)
    tensors = {
        "input_ids": ids.to(device, non_blocking=pin),
        "attention_mask": (positions < lengths_d[:, None]).to(torch.int64),
    }
    if m.needs_token_type_ids:
        tensors["token_type_ids"] = torch.zeros((n_rows, length), dtype=torch.int64, device=device)
    return tensors


def gpu_batch_tokens(device: torch.device, st: SentenceTransformer) -> int:
    """A padded-token budget that fits comfortably in the free memory of the GPU."""
    free, _total = torch.cuda.mem_get_info(device)
    # Blocks torch's caching allocator holds but no tensor uses are free to us too; counting them keeps the budget
    # (and so the batches) the same from one call to the next instead of shrinking after a large call.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    hidden = int(getattr(transformer_model(st).config, "hidden_size", 768))
    intermediate = int(getattr(transformer_model(st).config, "intermediate_size", 4 * hidden))
    # Peak activation per token in one layer is dominated by the FFN intermediate and a few hidden-size buffers;
    # with fused attention no L x L matrix is stored. 2 bytes (half precision) x generous factor of 4. Measured on
    # an H200 (bf16, 1M-token batches): 17 KB per token for bge-base against the 74 KB assumed here.
    bytes_per_token = (intermediate + 8 * hidden) * 2 * 4
    budget = int(free * 0.5 // bytes_per_token)
    return int(min(max(budget, 4096), GPU_MAX_BATCH_TOKENS))
