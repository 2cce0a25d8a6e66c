"""The planned form of an engine call: token ids, segments and routes as flat numpy arrays.

`TokenizedTexts` is what the engine plans from, whether it tokenised the texts itself or a pipeline did so elsewhere
(worker processes, Ray CPU tasks): each text's ids without special tokens or truncation, the prompt included, all
concatenated. A `Part` is a planned slice of a call (segments, their routes); the batch runner and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tempscale_rag.routing import LengthRouter


@dataclass(frozen=True)
class TokenizedTexts:
    """Texts as token ids, the engine's input before planning (`TempScaleEncoder.tokenize`, `encode_tokens`).

    Attributes:
        ids: Every text's token ids concatenated, int32, no special tokens, no truncation (a prompt, if any, included).
        lengths: Tokens of each text, int64; `ids` holds `lengths.sum()` ids.
        blank: Per text, True where the text was empty or whitespace-only (for the report's `empty_inputs`); None
            counts texts of zero tokens instead.
    """

    ids: np.ndarray
    lengths: np.ndarray
    blank: np.ndarray | None = None
    starts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        lengths = np.asarray(self.lengths)
        if ids.ndim != 1 or lengths.ndim != 1:
            raise ValueError(f"ids and lengths must be flat arrays, got shapes {ids.shape} and {lengths.shape}")
        if not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0) or not (
            np.issubdtype(lengths.dtype, np.integer) or lengths.size == 0
        ):
            raise TypeError(f"ids and lengths must be integer arrays, got {ids.dtype} and {lengths.dtype}")
        if lengths.size and int(lengths.min()) < 0:
            raise ValueError("lengths must not be negative")
        if int(lengths.sum()) != len(ids):
            raise ValueError(f"lengths add up to {int(lengths.sum())} tokens but ids holds {len(ids)}")
        if self.blank is not None and len(self.blank) != len(lengths):
            raise ValueError(f"blank has {len(self.blank)} entries for {len(lengths)} texts")
        object.__setattr__(self, "ids", ids.astype(np.int32, copy=False))
        object.__setattr__(self, "lengths", lengths.astype(np.int64, copy=False))
        if self.blank is not None:
            object.__setattr__(self, "blank", np.asarray(self.blank, dtype=bool))
        object.__setattr__(self, "starts", np.concatenate(([0], np.cumsum(self.lengths))).astype(np.int64))

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_lists(cls, ids: list[list[int]] | list[np.ndarray], blank: np.ndarray | None = None) -> TokenizedTexts:
        """From one id sequence per text (lists or arrays, as a tokenizer or a Ray Data column gives them)."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]) if len(ids) else np.zeros(0, np.int32)
        return cls(flat, lengths, blank)

    @classmethod
    def concat(cls, pieces: list[TokenizedTexts]) -> TokenizedTexts:
        """Several batches as one, in order."""
        if not pieces:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.int64))
        blanks = [p.blank for p in pieces]
        blank = None if any(b is None for b in blanks) else np.concatenate([b for b in blanks if b is not None])
        return cls(np.concatenate([p.ids for p in pieces]), np.concatenate([p.lengths for p in pieces]), blank)

    def slice(self, start: int, stop: int) -> TokenizedTexts:
        """Texts `start .. stop` (their ids are a view, not a copy)."""
        blank = None if self.blank is None else self.blank[start:stop]
        stop = min(stop, len(self))
        return TokenizedTexts(self.ids[self.starts[start] : self.starts[stop]], self.lengths[start:stop], blank)

    def split(self) -> list[np.ndarray]:
        """One id array per text (views into `ids`), e.g. for a Ray Data list column."""
        return np.split(self.ids, self.starts[1:-1]) if len(self) else []

    def empty_count(self) -> int:
        """Texts counted as empty in a report: blank ones, or without `blank`, those of zero tokens."""
        return int(self.blank.sum()) if self.blank is not None else int((self.lengths == 0).sum())


@dataclass
class Part:
    """Tokenised, segmented and routed inputs `offset .. offset + inputs` of one call, as flat arrays.

    A segment is one window of one input: `flat[start : start + body]` plus the model's special tokens.
    """

    offset: int  # index of the part's first input in the call
    first_segment: int  # index of the part's first segment in the call
    flat: np.ndarray  # int32 token ids of every input's text, concatenated (no special tokens)
    start: np.ndarray  # per segment: where its body starts in `flat`
    body: np.ndarray  # per segment: text tokens (the model sees `body + specials.count`)
    owner: np.ndarray  # per segment: input index in the call
    tau: np.ndarray  # per segment: attention temperature
    bucket: np.ndarray  # per segment: index of its bucket label in the route table
    first: np.ndarray  # per input: index of its first segment within the part
    dropped: np.ndarray  # per input: tokens cut off by `truncate`
    empty: int  # inputs that are empty or whitespace-only


@dataclass(frozen=True)
class RouteTable:
    """`LengthRouter.route` for every length up to the window, as arrays: routing a part is one lookup."""

    tau: np.ndarray
    bucket: np.ndarray
    labels: list[str]

    @classmethod
    def build(cls, router: LengthRouter, window: int, *, query: bool) -> RouteTable:
        """Route every length 0..window once."""
        routes = [router.route(n, query=query) for n in range(window + 1)]
        labels = list(dict.fromkeys(r.bucket for r in routes))
        return cls(
            tau=np.array([r.tau for r in routes], dtype=np.float64),
            bucket=np.array([labels.index(r.bucket) for r in routes], dtype=np.int64),
            labels=labels,
        )


def padded_lengths(lengths: np.ndarray, window: int) -> np.ndarray:
    """`padded_length` of every element of an integer array (see `encoder.padded_length`)."""
    step = np.where(lengths <= 64, 8, np.where(lengths <= 128, 16, 32))
    return np.minimum(-(-lengths // step) * step, np.maximum(window, lengths))


def check_tokens(tokens: TokenizedTexts, vocab: int, model_name: str) -> TokenizedTexts:
    """`tokens` itself, once it is `TokenizedTexts` whose ids all lie in the model's vocabulary (`vocab` rows)."""
    if not isinstance(tokens, TokenizedTexts):
        raise TypeError(
            f"encode_tokens() takes TokenizedTexts (from tokenize() or TokenizedTexts(ids, lengths)), got "
            f"{type(tokens).__name__}"
        )
    if len(tokens.ids) and (int(tokens.ids.min()) < 0 or (vocab and int(tokens.ids.max()) >= vocab)):
        raise ValueError(
            f"token ids must lie in 0..{vocab - 1} (the vocabulary of {model_name}); got "
            f"{int(tokens.ids.min())}..{int(tokens.ids.max())}: tokenise with this model's tokenizer"
        )
    return tokens
