"""A text corpus tokenised once into a cache folder, as nanoGPT's prepare.py does it: the recipe's
normalisation and word splitting (``word_tokenizer``: Hugging Face ``tokenizers``, WordLevel), a
vocabulary learnt from the training split only (``fit_vocabulary``), the 90/5/5 position split
(``split_points``), and the prepared folder (``prepare_corpus``): the text tokenised chunk by chunk
into a memory-mapped id file beside its tokenizer, checked on reuse (``prepared_problem``) and read
back without copying (``read_prepared``). Used by ``text.py``'s DataModule, which decides when."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import string
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from .errors import ConfigError
from .files import fingerprint

UNKNOWN = "<unk>"
# A line break kept as a word (``line_breaks``): no ASCII punctuation, so no setting splits it; a
# blank line, the play's speaker turn, is two of them.
NEWLINE = "⏎"
# The recipe's punctuation: string.punctuation except the hyphen and the apostrophe, which stay
# inside words (e.g. "o'er", "well-beloved").
PUNCTUATION = "[" + re.escape("".join(c for c in string.punctuation if c not in "-'")) + "]"
TOKENIZER_FILE = "tokenizer.json"
# The prepared cache's layout: a folder of another format (or none recorded) is prepared again.
CACHE_FORMAT = 2
CACHE_FILES = ("ids.bin", TOKENIZER_FILE)


def word_tokenizer(keep_punctuation: bool = False, lowercase: bool = True, line_breaks: bool = False) -> Tokenizer:
    """An untrained WordLevel tokenizer that normalises as the recipe does: lowercase, then every
    punctuation mark but ``-`` and ``'`` becomes a space (``keep_punctuation``: becomes a token of
    its own instead); words are split on whitespace. ``line_breaks``: every line break is a word of
    its own (``NEWLINE``), so that a model learns the play's lines and speaker turns. Saved with
    the run, it carries these rules."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNKNOWN))
    steps = [normalizers.Lowercase()] if lowercase else []
    if keep_punctuation:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(PUNCTUATION), behavior="isolated")])
    else:
        steps.append(normalizers.Replace(Regex(PUNCTUATION), " "))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if line_breaks:
        steps.append(normalizers.Replace("\n", f" {NEWLINE} "))
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def as_text(words: str) -> str:
    """Decoded words as the text they stand for: each ``NEWLINE`` word a line break again."""
    return re.sub(f" ?{NEWLINE} ?", "\n", words)


def split_words(tokenizer: Tokenizer, text: str) -> list[str]:
    """``text`` normalised and split into words by ``tokenizer``'s own rules."""
    normalised = tokenizer.normalizer.normalize_str(text)
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalised)]


def fit_vocabulary(tokenizer: Tokenizer, batches: Iterable[list[str]], min_count: int) -> Tokenizer:
    """Learn the vocabulary from ``batches`` of text: every word seen at least ``min_count`` times
    (the recipe's "more than 5" is ``min_count=6``), ordered by frequency, after ``<unk>`` = id 0;
    every other word encodes as ``<unk>``. ``batches`` must not run the tokenizer's own code while
    it is read (the two would deadlock)."""
    trainer = WordLevelTrainer(vocab_size=2**31 - 1, min_frequency=min_count, special_tokens=[UNKNOWN],
                               show_progress=False)
    tokenizer.train_from_iterator(batches, trainer)
    return tokenizer


def text_chunks(path: Path, size: int = 1 << 22):
    """The file's text in pieces of about ``size`` bytes, each cut after a whitespace byte (so that
    no word and no UTF-8 character is cut), as (the piece's first byte offset, its text). Raises
    ``ConfigError`` naming the byte that is not UTF-8."""
    offset, rest = 0, b""
    with open(path, "rb") as file:
        while True:
            block = file.read(size)
            data, rest = rest + block, b""
            if block:
                cut = max(data.rfind(c) for c in (b"\n", b" ", b"\t", b"\r")) + 1
                if cut > 0:
                    data, rest = data[:cut], data[cut:]
            if not data:
                return
            try:
                yield offset, data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ConfigError(f"data.init_args.path: {path} is not UTF-8 text (byte {offset + error.start}: "
                                  f"{data[error.start:error.start + 4]!r}); convert it to UTF-8") from None
            offset += len(data)


def pieces(chunk: str, limit: int = 1 << 14) -> list[str]:
    """``chunk`` as lines, any line longer than ``limit`` characters cut after a space: small pieces
    that the tokenizer encodes in parallel (one huge string would be encoded slowly, on one thread)."""
    out = []
    for line in chunk.splitlines(keepends=True):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            cut = cut if cut > 0 else line.find(" ", limit)
            if cut < 0:
                break
            out.append(line[: cut + 1])
            line = line[cut + 1:]
        out.append(line)
    return out


def prepare_corpus(source: Path, tokenizer: Tokenizer, min_count: int, val_fraction: float, test_fraction: float,
                   folder: Path, chunk_size: int = 1 << 22, about: dict | None = None) -> None:
    """Tokenise ``source`` once into ``folder`` (as nanoGPT's prepare.py writes train.bin):
    ``tokenizer.json`` (its vocabulary learnt from the training split), ``ids.bin`` (every word's id,
    uint16 or uint32, read back memory-mapped) and ``meta.json`` (the split points). Chunk by
    chunk, never holding the corpus's words, each pass in the tokenizer's parallel Rust code:
    pass 1 counts the words (the split points follow), pass 2 feeds the training split to the
    vocabulary trainer, pass 3 encodes. Written into a temporary folder and renamed: ``folder`` is
    complete or absent. ``about``: more to record in ``meta.json`` (the text's checksum and stat)."""
    words_in = word_counter(tokenizer)
    starts, chunk_words = count_words(source, chunk_size, words_in)
    n = sum(chunk_words)
    train_end, val_end = split_points(n, val_fraction, test_fraction)
    last, before = chunk_of_training_end(chunk_words, train_end)
    tail = training_tail(source, starts, last, train_end - before, tokenizer, words_in) if n else []
    fit_vocabulary(tokenizer, training_split(source, chunk_size, last, tail), min_count)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max else np.uint32
    record = dict(format=CACHE_FORMAT, words=n, dtype=np.dtype(dtype).name, train_end=train_end, val_end=val_end,
                  source=str(source), **(about or {}))
    write_prepared(source, tokenizer, chunk_size, folder, record)


def word_counter(tokenizer: Tokenizer) -> Callable[[list[str]], list[int]]:
    """The number of words in each of a list of text pieces, split by ``tokenizer``'s rules."""
    counter = word_tokenizer()  # the same normalisation and splitting, every word <unk>: counts words
    counter.normalizer, counter.pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    counter.model = WordLevel({UNKNOWN: 0}, unk_token=UNKNOWN)
    return lambda parts: [len(e.ids) for e in counter.encode_batch(parts)]


def count_words(source: Path, chunk_size: int, words_in: Callable) -> tuple[list[int], list[int]]:
    """Pass 1: each chunk's first byte offset, and the words in each chunk."""
    starts, chunk_words = [], []
    for start, chunk in text_chunks(source, chunk_size):
        starts.append(start)
        chunk_words.append(sum(words_in(pieces(chunk))))
    return starts, chunk_words


def chunk_of_training_end(chunk_words: list[int], train_end: int) -> tuple[int, int]:
    """The chunk where the training split ends, and the words in the chunks before it."""
    last, before = 0, 0
    while last < len(chunk_words) - 1 and before + chunk_words[last] < train_end:
        before += chunk_words[last]
        last += 1
    return last, before


def training_tail(source: Path, starts: list[int], last: int, wanted: int, tokenizer: Tokenizer,
                  words_in: Callable) -> list[list[str]]:
    """Chunk ``last``'s first ``wanted`` words (its share of the training split) as batches of text
    pieces, the piece across the split's end cut at the word: prepared before the trainer runs (the
    tokenizer's own code must not run while its trainer reads the batches: the two would deadlock)."""
    with open(source, "rb") as file:  # that chunk's bytes alone, as pass 1 cut them
        file.seek(starts[last])
        end = starts[last + 1] if last + 1 < len(starts) else None
        parts = pieces(file.read(None if end is None else end - starts[last]).decode("utf-8"))
    tail, seen = [], 0
    for part, count in zip(parts, words_in(parts)):
        if seen + count > wanted:
            tail.append(split_words(tokenizer, part)[: wanted - seen])
            break
        seen += count
        tail.append([part])
    return tail


def training_split(source: Path, chunk_size: int, last: int, tail: list[list[str]]) -> Iterator[list[str]]:
    """Pass 2's input: the training split as batches of text pieces, chunk ``last`` replaced by ``tail``."""
    for k, (_, chunk) in enumerate(text_chunks(source, chunk_size)):
        if k == last:
            yield from tail
            return
        yield pieces(chunk)


def write_prepared(source: Path, tokenizer: Tokenizer, chunk_size: int, folder: Path, record: dict) -> None:
    """``ids.bin``, ``tokenizer.json`` and ``meta.json`` (``record`` and the files' checksums) into a
    partial folder, renamed onto ``folder`` once complete and removed in any case."""
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write_ids(source, tokenizer, chunk_size, partial / "ids.bin", np.dtype(record["dtype"]), record["words"])
        tokenizer.save(str(partial / TOKENIZER_FILE))
        meta = dict(record, files={name: dict(size=(partial / name).stat().st_size, fingerprint=fingerprint(partial / name))
                                   for name in CACHE_FILES})
        (partial / "meta.json").write_text(json.dumps({**meta, "checksum": record_checksum(meta)}))
        try:
            partial.rename(folder)
        except OSError:  # another process prepared the same corpus first: keep its folder
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_ids(source: Path, tokenizer: Tokenizer, chunk_size: int, path: Path, dtype: np.dtype, n: int) -> None:
    """Pass 3: every word's id, encoded chunk by chunk into ``path`` (one 0 for a text of no words:
    a memory map needs a byte); ``n``, the words pass 1 counted, must be the words encoded."""
    # Plain writes, not a writable memmap: a full disk is then an OSError (ENOSPC), not a SIGBUS.
    written = 0
    with open(path, "wb") as file:
        for _, chunk in text_chunks(source, chunk_size):
            encodings = tokenizer.encode_batch(pieces(chunk))
            ids = np.fromiter((i for e in encodings for i in e.ids), dtype=dtype)
            ids.tofile(file)
            written += len(ids)
        if n == 0:
            np.zeros(1, dtype=dtype).tofile(file)
    if written != n:
        raise RuntimeError(f"prepare_corpus: counted {n} words in {source} but encoded {written}")


def record_checksum(meta: dict) -> str:
    """The SHA-256 of a ``meta.json`` record's own values (all but ``checksum``): an edited record fails it."""
    return hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode()).hexdigest()


def prepared_problem(folder: Path) -> str | None:
    """Why the prepared corpus in ``folder`` cannot be used, or None if it is whole: its
    ``meta.json`` must parse, be of ``CACHE_FORMAT``, match its own checksum and agree with itself
    (split points within the words, the ids' size), and each file must have the size and SHA-256
    recorded when it was written (``files.fingerprint``: a full SHA-256 up to 256 MB)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"meta.json unreadable ({type(error).__name__})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return f"meta.json is not of cache format {CACHE_FORMAT}"
    if meta.get("checksum") != record_checksum(meta):
        return "meta.json was changed after it was written"
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        if not 0 <= meta["train_end"] <= meta["val_end"] <= meta["words"]:
            return "meta.json's split points lie outside its words"
        if meta["files"]["ids.bin"]["size"] != max(meta["words"], 1) * itemsize:
            return "meta.json's word count does not match the ids' size"
        for name in CACHE_FILES:
            recorded, path = meta["files"][name], folder / name
            if not path.is_file() or path.stat().st_size != recorded["size"]:
                return f"{name} is missing or not of its recorded size"
            if fingerprint(path) != recorded["fingerprint"]:
                return f"{name} does not match its recorded checksum"
    except (KeyError, TypeError) as error:
        return f"meta.json lacks {error}"
    return None


def discard(folder: Path) -> None:
    """Remove a prepared folder: renamed first (as a partial of this process, so that a crash here
    leaves what ``remove_stale_partials`` clears), then deleted; gone already is fine."""
    doomed = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    try:
        folder.rename(doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def split_points(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Position split of a stream of ``n`` tokens: train ``[0, a)``, validation ``[a, b)``, test
    ``[b, n)`` with ``b = n - round(test_fraction·n)``, ``a = b - round(val_fraction·n)``."""
    val_end = n - round(test_fraction * n)
    return val_end - round(val_fraction * n), val_end


def read_prepared(folder: Path) -> tuple[dict[str, np.ndarray], Tokenizer]:
    """The prepared corpus in ``folder``: its ids cut into the train, val and test splits (views of
    the memory-mapped ``ids.bin``: the ids stay on disk) and its tokenizer."""
    meta = json.loads((folder / "meta.json").read_text())
    ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r", shape=(max(meta["words"], 1),))
    ids = ids[: meta["words"]]
    train_end, val_end = meta["train_end"], meta["val_end"]
    splits = {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}
    return splits, Tokenizer.from_file(str(folder / TOKENIZER_FILE))


def file_stat(path: Path) -> dict:
    """What says a file is unchanged without reading it: its resolved path, size and mtime."""
    stat = path.stat()
    return dict(path=str(path.resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
