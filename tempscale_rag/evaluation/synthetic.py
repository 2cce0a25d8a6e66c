"""LongEmbed's synthetic retrieval tasks, passkey and needle, rebuilt from the published recipe (arXiv 2404.12096).

For each target length L, 100 candidate documents share 50 queries and each query has exactly one relevant
document. A document is a haystack cut to `int(0.75 * L)` whitespace-separated words with one sentence (a passkey
or a fact) inserted at a random sentence boundary; the query asks for that sentence's content, so only the one
document that carries the answer is relevant.

Word budget: the inserted sentence counts towards the `int(0.75 * L)` words, so every document of length L has
exactly that many words. This matches the average character lengths MTEB publishes for LEMBPasskeyRetrieval (914.9
characters at L = 256 and 116,417.9 at L = 32768; the filler alone at 0.75 * L words would be about 60 characters
longer at L = 256). The haystack is cut at a word, so its last sentence may be unfinished.

Sentence boundaries are the start of the haystack and the end of every word that ends in `.`, `!` or `?` (optionally
followed by closing quotes or brackets), within the cut haystack; one is drawn uniformly at random per document.

Everything is drawn from `random.Random` seeded with the task, `seed` and L, so the same arguments always give the
same datasets and the dataset for one length does not depend on which other lengths were asked for.
"""

from __future__ import annotations

import bisect
import os
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tempscale_rag.evaluation.datasets import RetrievalDataset

LONGEMBED_LENGTHS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
"""The eight target lengths of LongEmbed's passkey and needle tasks."""

PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
"""The passkey haystack, repeated (joined by single spaces) as long as needed."""

LONGEMBED_HAYSTACK_START: tuple[str, ...] = ("rss.txt", "goodtaste.txt")
"""Essays LongEmbed's needle haystack starts with; the other essays follow in sorted order."""

_FIRST_NAMES = (
    "Aaron", "Adele", "Aiko", "Alejandro", "Amara", "Anders", "Anika", "Arjun", "Beatrice", "Bruno",
    "Camille", "Carlos", "Chiara", "Dmitri", "Elena", "Emeka", "Esther", "Farah", "Felix", "Gabriel",
    "Greta", "Hana", "Hugo", "Ingrid", "Isaac", "Jamal", "Julia", "Kenji", "Lars", "Leila",
    "Lucas", "Magnus", "Maria", "Mateo", "Mei", "Nadia", "Nikolai", "Olivia", "Omar", "Priya",
    "Rafael", "Rosa", "Samuel", "Sofia", "Tariq", "Thea", "Tomas", "Valentina", "Yusuf", "Zara",
)  # fmt: skip
_LAST_NAMES = (
    "Abbott", "Alvarez", "Bauer", "Bennett", "Castillo", "Chen", "Dubois", "Eriksson", "Fischer", "Garcia",
    "Hansen", "Hughes", "Ivanova", "Jensen", "Kowalski", "Larsen", "Lopez", "Moreau", "Nakamura", "Novak",
    "Okafor", "Olsen", "Patel", "Petrov", "Quinn", "Rossi", "Santos", "Schmidt", "Silva", "Tanaka",
    "Turner", "Varga", "Weber", "Whitfield", "Xu", "Yamamoto", "Zhang", "Ziegler", "Brennan", "Costa",
)  # fmt: skip

_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]*$")
_WORD = re.compile(r"\S+")


def make_passkey(
    lengths: Iterable[int] = LONGEMBED_LENGTHS, *, n_docs: int = 100, n_queries: int = 50, seed: int = 0
) -> dict[int, RetrievalDataset]:
    """Build LongEmbed-style passkey retrieval datasets, one per target length.

    Each document is `PASSKEY_FILLER` repeated to `int(0.75 * L)` words (see the module docstring for how the budget
    and sentence boundaries are counted) with `"{Name}'s pass key is {key}. Remember it. {key} is the pass key for
    {Name}."` inserted at a random sentence boundary. Names ("First Last", from built-in lists) are unique within a
    length and keys are distinct 4-5 digit numbers. `n_queries` of the documents are drawn to be targets, each with
    the query `"what is the passkey for {Name}?"`; the others are distractors.

    Args:
        lengths: Target lengths L (positive, distinct); LongEmbed uses `LONGEMBED_LENGTHS`.
        n_docs: Candidate documents per length (at most 2,000, the number of distinct built-in names).
        n_queries: Queries per length, 1 to `n_docs`.
        seed: Random seed; the same seed gives identical datasets.

    Returns:
        Length L -> dataset named `passkey_{L}` (doc ids `passkey_{L}_doc{j}`, query ids `passkey_{L}_q{i}`,
        zero-padded so that string order is numeric order).

    Raises:
        ValueError: For invalid lengths or counts, or a length too short to hold the passkey sentence.
    """
    length_list = _check_lengths(lengths)
    _check_counts(n_docs, n_queries)
    all_names = [f"{first} {last}" for first in _FIRST_NAMES for last in _LAST_NAMES]
    if n_docs > len(all_names):
        raise ValueError(f"n_docs={n_docs} exceeds the {len(all_names)} distinct built-in names")
    longest = max(int(0.75 * length) for length in length_list)
    filler = _Haystack(" ".join([PASSKEY_FILLER] * (longest // len(PASSKEY_FILLER.split()) + 1)))
    datasets: dict[int, RetrievalDataset] = {}
    for length in length_list:
        rng = random.Random(f"passkey|{seed}|{length}")
        names = rng.sample(all_names, n_docs)
        keys = rng.sample(range(1000, 100_000), n_docs)
        needles = [
            f"{name}'s pass key is {key}. Remember it. {key} is the pass key for {name}."
            for name, key in zip(names, keys, strict=True)
        ]
        questions = [f"what is the passkey for {name}?" for name in names]
        datasets[length] = _build("passkey", length, filler, needles, questions, n_queries, rng)
    return datasets


def make_needle(
    haystack_dir: str | os.PathLike[str],
    needles_tsv: str | os.PathLike[str],
    lengths: Iterable[int] = LONGEMBED_LENGTHS,
    *,
    n_docs: int = 100,
    n_queries: int = 50,
    seed: int = 0,
    haystack_start: Sequence[str] = LONGEMBED_HAYSTACK_START,
) -> dict[int, RetrievalDataset]:
    """Build LongEmbed-style needle retrieval datasets, one per target length.

    The haystack is every `*.txt` file of `haystack_dir` (LongEmbed uses Paul Graham's essays), read by
    `read_haystack`: the `haystack_start` files first, then the rest in sorted order, concatenated with no separator
    as LongEmbed's source (gkamradt's needle tester, `context += f.read()`) does; most essays do not end in a newline,
    so an essay's last word fuses with the next one's first, as in LongEmbed. After the first two files LongEmbed
    followed the file system's glob order, which is not recorded; sorted order keeps this reproducible, so the long
    haystacks match LongEmbed's in content but not word for word. As in LongEmbed, every document of
    length L carries the same haystack prefix, cut to `int(0.75 * L)` words less the fact's words, and differs only
    in which fact is inserted and where. A model that sees only the first few hundred tokens therefore cannot tell
    documents apart unless the fact falls inside its window.

    Each document gets a distinct fact drawn from `needles_tsv` (lines `fact<TAB>question`, read by
    `read_needles`); `n_queries` documents are drawn to be targets and their facts' questions are the queries.

    Args:
        haystack_dir: Folder of haystack `.txt` files. Nothing is bundled with the package.
        needles_tsv: File of `fact<TAB>question` lines; needs at least `n_docs` of them.
        lengths: Target lengths L (positive, distinct); LongEmbed uses `LONGEMBED_LENGTHS`.
        n_docs: Candidate documents per length.
        n_queries: Queries per length, 1 to `n_docs`.
        seed: Random seed; the same seed gives identical datasets.
        haystack_start: Files that open the haystack, in this order; each must exist. Pass `()` for plain sorted
            order.

    Returns:
        Length L -> dataset named `needle_{L}` (doc ids `needle_{L}_doc{j}`, query ids `needle_{L}_q{i}`).

    Raises:
        ValueError: If the folder or file is missing or malformed, there are fewer facts than `n_docs`, the
            haystack is shorter than the longest length needs, or lengths/counts are invalid.
    """
    length_list = _check_lengths(lengths)
    _check_counts(n_docs, n_queries)
    haystack = _Haystack(read_haystack(haystack_dir, haystack_start=haystack_start))
    pairs = read_needles(needles_tsv)
    if len(pairs) < n_docs:
        raise ValueError(f"{needles_tsv} has {len(pairs)} facts but n_docs={n_docs} documents each need a distinct one")
    datasets: dict[int, RetrievalDataset] = {}
    for length in length_list:
        rng = random.Random(f"needle|{seed}|{length}")
        chosen = [pairs[i] for i in rng.sample(range(len(pairs)), n_docs)]
        needed = int(0.75 * length) - min(len(fact.split()) for fact, _ in chosen)
        if needed > haystack.n_words:
            raise ValueError(
                f"the haystack in {haystack_dir} has {haystack.n_words} words; length {length} needs {needed}"
            )
        facts = [fact for fact, _ in chosen]
        questions = [question for _, question in chosen]
        datasets[length] = _build("needle", length, haystack, facts, questions, n_queries, rng)
    return datasets


def read_needles(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read `fact<TAB>question` lines (blank lines skipped, an optional `fact<TAB>question` header allowed).

    Raises:
        ValueError: If the file is missing or not UTF-8, a line does not have exactly two non-empty tab-separated
            fields, a fact or question repeats, or the file has no pairs. Messages name the file and line.
    """
    tsv = Path(path)
    if not tsv.is_file():
        raise ValueError(f"needles file {tsv} does not exist")
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{tsv}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{tsv}:{lineno}: expected 'fact<TAB>question' (two non-empty fields), got {line!r}")
        if not pairs and [field.lower() for field in fields] == ["fact", "question"]:
            continue
        for field in fields:
            if field in seen:
                raise ValueError(f"{tsv}:{lineno}: {field!r} already appears on line {seen[field]}")
            seen[field] = lineno
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise ValueError(f"{tsv}: no fact/question pairs")
    return pairs


def read_haystack(
    haystack_dir: str | os.PathLike[str], *, haystack_start: Sequence[str] = LONGEMBED_HAYSTACK_START
) -> str:
    """Concatenate the `.txt` files of `haystack_dir` (no separator): `haystack_start` first, then sorted order.

    Raises:
        ValueError: If the folder does not exist, holds no `.txt` files, misses a `haystack_start` file, or a file is
            not UTF-8.
    """
    folder = Path(haystack_dir)
    if not folder.is_dir():
        raise ValueError(f"haystack folder {folder} does not exist or is not a directory")
    files = sorted(path.name for path in folder.glob("*.txt") if path.is_file())
    if not files:
        raise ValueError(f"haystack folder {folder} has no .txt files")
    missing = [name for name in haystack_start if name not in files]
    if missing:
        raise ValueError(
            f"haystack folder {folder} lacks {', '.join(missing)}, which LongEmbed's haystack starts with; "
            "pass haystack_start=() to use plain sorted order"
        )
    ordered = list(dict.fromkeys([*haystack_start, *files]))
    parts = []
    for name in ordered:
        try:
            parts.append((folder / name).read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{folder / name}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return "".join(parts)


class _Haystack:
    """A text with its word ends and sentence boundaries indexed, so that cutting and inserting are cheap."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.word_ends: list[int] = []
        # A boundary is named by the number of words before it and its character offset; the start is always one.
        self.boundary_words: list[int] = [0]
        self.boundary_offsets: list[int] = [0]
        for match in _WORD.finditer(text):
            self.word_ends.append(match.end())
            if _SENTENCE_END.search(match.group()):
                self.boundary_words.append(len(self.word_ends))
                self.boundary_offsets.append(match.end())

    @property
    def n_words(self) -> int:
        return len(self.word_ends)

    def document(self, n_words: int, sentence: str, rng: random.Random) -> str:
        """The first `n_words` words of the haystack with `sentence` at a random sentence boundary among them."""
        cut = self.text[: self.word_ends[n_words - 1]]
        n_boundaries = bisect.bisect_right(self.boundary_words, n_words)
        offset = self.boundary_offsets[rng.randrange(n_boundaries)]
        if offset == 0:
            return f"{sentence} {cut}"
        # `cut[offset:]` starts with the whitespace that followed the word, so the original layout is kept.
        return f"{cut[:offset]} {sentence}{cut[offset:]}"


def _build(
    task: str,
    length: int,
    haystack: _Haystack,
    needles: list[str],
    questions: list[str],
    n_queries: int,
    rng: random.Random,
) -> RetrievalDataset:
    budget = int(0.75 * length)
    doc_width, query_width = len(str(len(needles) - 1)), len(str(n_queries - 1))
    corpus: dict[str, str] = {}
    doc_ids: list[str] = []
    for j, needle in enumerate(needles):
        n_filler = budget - len(needle.split())
        if n_filler < 1:
            raise ValueError(
                f"length {length} allows {budget} words, too few for the {len(needle.split())}-word sentence "
                f"{needle!r} plus any haystack; use a longer length"
            )
        doc_id = f"{task}_{length}_doc{j:0{doc_width}d}"
        corpus[doc_id] = haystack.document(n_filler, needle, rng)
        doc_ids.append(doc_id)
    targets = rng.sample(range(len(needles)), n_queries)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, target in enumerate(targets):
        qid = f"{task}_{length}_q{i:0{query_width}d}"
        queries[qid] = questions[target]
        qrels[qid] = {doc_ids[target]: 1}
    return RetrievalDataset(name=f"{task}_{length}", corpus=corpus, queries=queries, qrels=qrels)


def _check_lengths(lengths: Iterable[int]) -> list[int]:
    length_list = list(lengths)
    if not length_list:
        raise ValueError("lengths must not be empty")
    for length in length_list:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"lengths must be positive ints, got {length!r}")
    if len(set(length_list)) != len(length_list):
        raise ValueError(f"lengths must be distinct, got {length_list}")
    return length_list


def _check_counts(n_docs: int, n_queries: int) -> None:
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise ValueError(f"n_docs must be a positive int, got {n_docs!r}")
    if isinstance(n_queries, bool) or not isinstance(n_queries, int) or not 1 <= n_queries <= n_docs:
        raise ValueError(f"n_queries must be an int from 1 to n_docs={n_docs}, got {n_queries!r}")
