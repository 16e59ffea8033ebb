"""Word-level language modelling data: the corpus (a local file, or a download verified by its
SHA-256), its normalisation and vocabulary (Hugging Face ``tokenizers``, WordLevel), the 90/5/5
position split, and the language-model batching.

Preparation, as nanoGPT's prepare.py does it: the text is tokenised once, chunk by chunk, into a
memory-mapped id file beside its tokenizer (``prepare_corpus``), reused for as long as the text's
SHA-256 and the settings match; the windows are read from that file, never from Python lists.

Batching, as language models do it (and as ``StreamWindows`` documents): the token stream of a
split is cut into ``batch_size`` contiguous streams, one per batch row, read ``seq_len`` tokens at a
time; the targets are the inputs shifted by one token. Row ``b`` of window ``k + 1`` continues row
``b`` of window ``k``, which is what lets a model carry its hidden state from one window to the next.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import string
import urllib.parse
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from jsonargparse.typing import PositiveInt
from pytorch_lightning.utilities import rank_zero_warn
from tokenizers.trainers import WordLevelTrainer
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import batches_drawn, loader, processes, share
from .errors import ConfigError
from .files import atomic_write, download, fingerprint, remove_stale_partials, sha256_of

UNKNOWN = "<unk>"
# The recipe's punctuation: string.punctuation except the hyphen and the apostrophe, which stay
# inside words (e.g. "o'er", "well-beloved").
PUNCTUATION = "[" + re.escape("".join(c for c in string.punctuation if c not in "-'")) + "]"
TOKENIZER_FILE = "tokenizer.json"
# The prepared cache's layout: a folder of another format (or none recorded) is prepared again.
CACHE_FORMAT = 2
CACHE_FILES = ("ids.bin", TOKENIZER_FILE)


def word_tokenizer(keep_punctuation: bool = False, lowercase: bool = True) -> Tokenizer:
    """An untrained WordLevel tokenizer that normalises as the recipe does: lowercase, then every
    punctuation mark but ``-`` and ``'`` becomes a space (``keep_punctuation``: becomes a token of
    its own instead); words are split on whitespace. Saved with the run, it carries these rules."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNKNOWN))
    steps = [normalizers.Lowercase()] if lowercase else []
    if keep_punctuation:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(PUNCTUATION), behavior="isolated")])
    else:
        steps.append(normalizers.Replace(Regex(PUNCTUATION), " "))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def split_words(tokenizer: Tokenizer, text: str) -> list[str]:
    """``text`` normalised and split into words by ``tokenizer``'s own rules."""
    normalised = tokenizer.normalizer.normalize_str(text)
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalised)]


def vocabulary_trainer(min_count: int) -> WordLevelTrainer:
    """The recipe's vocabulary: every word seen at least ``min_count`` times, most frequent first,
    after ``<unk>`` = id 0."""
    return WordLevelTrainer(vocab_size=2**31 - 1, min_frequency=min_count, special_tokens=[UNKNOWN],
                            show_progress=False)


def fit_vocabulary(tokenizer: Tokenizer, words: list[str], min_count: int) -> Tokenizer:
    """Learn the vocabulary from ``words``: every word seen at least ``min_count`` times (the
    recipe's "more than 5" is ``min_count=6``), ordered by frequency, after ``<unk>`` = id 0;
    every other word encodes as ``<unk>``."""
    trainer = vocabulary_trainer(min_count)
    tokenizer.train_from_iterator((words[i : i + 10_000] for i in range(0, len(words), 10_000)), trainer)
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
    counter = word_tokenizer()  # the same normalisation and splitting, every word <unk>: counts words
    counter.normalizer, counter.pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    counter.model = WordLevel({UNKNOWN: 0}, unk_token=UNKNOWN)
    words_in = lambda parts: [len(e.ids) for e in counter.encode_batch(parts)]
    starts, chunk_words = [], []
    for start, chunk in text_chunks(source, chunk_size):
        starts.append(start)
        chunk_words.append(sum(words_in(pieces(chunk))))
    n = sum(chunk_words)
    train_end, val_end = split_points(n, val_fraction, test_fraction)
    last, before = 0, 0  # the chunk where the training split ends, and the words before it
    while last < len(chunk_words) - 1 and before + chunk_words[last] < train_end:
        before += chunk_words[last]
        last += 1

    # The last chunk's share of the training split, prepared before the trainer runs (the tokenizer's
    # own code must not run while its trainer reads the generator: the two would deadlock).
    tail, seen = [], before
    if n:
        with open(source, "rb") as file:  # that chunk's bytes alone, as pass 1 cut them
            file.seek(starts[last])
            end = starts[last + 1] if last + 1 < len(starts) else None
            parts = pieces(file.read(None if end is None else end - starts[last]).decode("utf-8"))
        for part, count in zip(parts, words_in(parts)):
            if seen + count > train_end:
                tail.append(split_words(tokenizer, part)[: train_end - seen])
                break
            seen += count
            tail.append([part])

    def training_split():
        """The training split as batches of text pieces, the piece across its end cut at the word."""
        for k, (_, chunk) in enumerate(text_chunks(source, chunk_size)):
            if k == last:
                yield from tail
                return
            yield pieces(chunk)

    trainer = vocabulary_trainer(min_count)
    tokenizer.train_from_iterator(training_split(), trainer)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max else np.uint32
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        # Plain writes, not a writable memmap: a full disk is then an OSError (ENOSPC), not a SIGBUS.
        written = 0
        with open(partial / "ids.bin", "wb") as file:
            for _, chunk in text_chunks(source, chunk_size):
                encodings = tokenizer.encode_batch(pieces(chunk))
                ids = np.fromiter((i for e in encodings for i in e.ids), dtype=dtype)
                ids.tofile(file)
                written += len(ids)
            if n == 0:
                np.zeros(1, dtype=dtype).tofile(file)
        if written != n:
            raise RuntimeError(f"prepare_corpus: counted {n} words in {source} but encoded {written}")
        tokenizer.save(str(partial / TOKENIZER_FILE))
        meta = dict(format=CACHE_FORMAT, words=n, dtype=np.dtype(dtype).name, train_end=train_end, val_end=val_end,
                    source=str(source), **(about or {}),
                    files={name: dict(size=(partial / name).stat().st_size, fingerprint=fingerprint(partial / name))
                           for name in CACHE_FILES})
        (partial / "meta.json").write_text(json.dumps({**meta, "checksum": record_checksum(meta)}))
        try:
            partial.rename(folder)
        except OSError:  # another process prepared the same corpus first: keep its folder
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


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


class StreamWindows(Dataset):
    """A split's token ids as ``batch_size`` parallel streams, read in windows of ``seq_len``.

    With n = len(ids) // batch_size (the last len(ids) % batch_size tokens are dropped), row b is
    the stream ``ids[b·n : (b+1)·n]`` and item k is the whole batch for window k:

        x = streams[:, k·T : k·T + T],   y = streams[:, k·T + 1 : k·T + T + 1]   (T = seq_len)

    both (batch_size, T) int64; the last window is shorter when n - 1 is not a multiple of T, and
    nothing wraps around. Read with ``DataLoader(batch_size=None)``, in order.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, rows: slice = slice(None)):
        per_stream = len(ids) // batch_size
        # A view, not a copy: over a memory-mapped id file only the windows read are loaded.
        self.streams = np.asarray(ids[: batch_size * per_stream]).reshape(batch_size, per_stream)[rows]
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, -(-(self.streams.shape[1] - 1) // self.seq_len))  # ceil((n - 1) / T)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        start = k * self.seq_len
        end = min(start + self.seq_len, self.streams.shape[1] - 1)
        window = torch.from_numpy(self.streams[:, start : end + 1].astype(np.int64))
        return window[:, :-1], window[:, 1:]


class InOrder(Sampler[int]):
    """0, 1, ..., n - 1 every epoch, except that the first epoch after a resume starts at ``skip``
    (the windows the interrupted epoch had already trained on)."""

    def __init__(self, n: int, skip: int = 0):
        self.n, self.skip = n, skip

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        start, self.skip = self.skip, 0
        return iter(range(start, self.n))


def file_stat(path: Path) -> dict:
    """What says a file is unchanged without reading it: its resolved path, size and mtime."""
    stat = path.stat()
    return dict(path=str(path.resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)


class TextDataModule(pl.LightningDataModule):
    """A plain-text corpus for word-level language modelling (issue 4: tiny Shakespeare).

    Source: ``path`` if that file exists, else ``url`` downloaded once by ``prepare_data`` into
    ``cache_dir`` (``sha256`` required with a URL). When ``sha256`` is set, the file used is
    checked against it. The words are split by position, train / validation / test =
    (1 - val_fraction - test_fraction) / val_fraction / test_fraction; the vocabulary is learnt
    from the training split only (``min_count``, see ``fit_vocabulary``); batches are
    ``StreamWindows``: training reads ``batch_size`` streams; validation and test read
    ``eval_batch_size`` streams (default 10, as pytorch/examples' word_language_model scores), each
    from its start to its end with the state carried, so that only the first ``seq_len`` words of
    each stream are scored from a cold state (with the training batch of 100 a third of every
    ~100-word stream would be). ``vocab_size`` (read by the CLI to size the model) prepares the data on
    first use. The tokenizer goes into every checkpoint (``state_dict``); ``save_tokenizer``
    writes it as a file (the ``SaveTokenizer`` callback, into the run folder).
    """

    def __init__(self, path: str | None = "../shared/data/tinyshakespeare.txt", url: str | None = None,
                 sha256: str | None = None, cache_dir: str = ".cache/data", keep_punctuation: bool = False,
                 lowercase: bool = True, min_count: PositiveInt = 6, batch_size: PositiveInt = 100,
                 seq_len: PositiveInt = 50, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 eval_batch_size: PositiveInt = 10):
        super().__init__()
        self.save_hyperparameters()  # hparams.yaml and TensorBoard's HPARAMS
        if path is None and url is None:
            raise ConfigError("data.init_args.path: give a corpus file (path) or a download (url + sha256)")
        if url is not None and (sha256 is None or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
            raise ConfigError(f"data.init_args.sha256 must be the 64 hex digits of the file at data.init_args.url, "
                              f"got {sha256!r}")
        if path is not None and url is None and not Path(path).is_file():
            raise ConfigError(f"data.init_args.path: no such file {path} (or give url + sha256 to download it)")
        for key, value in dict(val_fraction=val_fraction, test_fraction=test_fraction).items():
            if not 0.0 < value < 0.5:
                raise ConfigError(f"data.init_args.{key} must lie in (0, 0.5), got {value}")
        self.path, self.url, self.sha256, self.cache_dir = path, url, sha256, Path(cache_dir)
        self.keep_punctuation, self.lowercase, self.min_count = keep_punctuation, lowercase, min_count
        self.batch_size, self.seq_len, self.eval_batch_size = batch_size, seq_len, eval_batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.tokenizer: Tokenizer | None = None
        self.windows_to_skip = 0

    @property
    def source(self) -> Path:
        """The corpus file read: ``path`` if it exists, else the download's place in ``cache_dir``."""
        if self.path is not None and (self.url is None or Path(self.path).is_file()):
            return Path(self.path)
        return self.cache_dir / (Path(urllib.parse.urlparse(self.url).path).name or "corpus.txt")

    def prepare_data(self) -> None:
        if not self.source.is_file():
            download(self.url, self.sha256, self.source)

    def prepared_folder(self, source: Path, source_sha256: str) -> Path:
        """Where ``source`` is kept tokenised: one folder per text (by its SHA-256) and settings."""
        return self.cache_dir / "prepared" / f"{source.stem}-{source_sha256[:16]}-{self.settings_key}"

    @property
    def settings_key(self) -> str:
        """8 hex digits naming the settings that decide the ids."""
        settings = dict(lowercase=self.lowercase, keep_punctuation=self.keep_punctuation, min_count=self.min_count,
                        val_fraction=self.val_fraction, test_fraction=self.test_fraction)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]

    def checksum(self, source: Path) -> str:
        """The text's SHA-256, read from a preparation of this very file (same path, size and
        modification time, as git's index does) or else computed: hashing 537 MB takes seconds."""
        here = file_stat(source)
        for meta in (self.cache_dir / "prepared").glob(f"{source.stem}-*-{self.settings_key}/meta.json"):
            try:
                recorded = json.loads(meta.read_text())
            except (OSError, UnicodeDecodeError, ValueError):
                continue  # a damaged record vouches for nothing
            if isinstance(recorded, dict) and recorded.get("stat") == here and recorded.get("sha256"):
                return recorded["sha256"]
        return sha256_of(source)

    def setup(self, stage: str | None = None) -> None:
        """Load the tokenised corpus, preparing it first where this text and these settings have not
        been prepared before (``prepare_corpus``); the ids stay on disk, memory-mapped."""
        if self.tokenizer is not None:
            return
        source = self.source
        if not source.is_file():
            self.prepare_data()
        try:
            found = self.checksum(source)
        except OSError as error:
            raise ConfigError(f"data.init_args.path: cannot read {source} ({error.strerror})") from None
        if self.sha256 is not None and found != self.sha256.lower():
            raise ConfigError(f"data.init_args.sha256: {source} has SHA-256 {found}, expected {self.sha256}")
        folder = self.prepared_folder(source, found)
        remove_stale_partials(folder.parent)
        problem = prepared_problem(folder) if folder.exists() else None
        if problem is not None:
            rank_zero_warn(f"lstm_pl: the prepared corpus {folder} is damaged ({problem}); preparing it again")
            discard(folder)
        if not folder.exists():
            about = dict(sha256=found, stat=file_stat(source))
            try:
                prepare_corpus(source, word_tokenizer(self.keep_punctuation, self.lowercase), self.min_count,
                               self.val_fraction, self.test_fraction, folder, about=about)
            except OSError as error:
                if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                    raise
                raise ConfigError(f"data.init_args.cache_dir: cannot write the prepared corpus into {folder.parent} "
                                  f"({error.strerror or error}); free space or choose another cache_dir") from None
        meta = json.loads((folder / "meta.json").read_text())
        ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r", shape=(max(meta["words"], 1),))
        ids = ids[: meta["words"]]
        train_end, val_end = meta["train_end"], meta["val_end"]
        self.splits = {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}
        for name, split in self.splits.items():
            key, streams = ("batch_size", self.batch_size) if name == "train" else ("eval_batch_size", self.eval_batch_size)
            if len(split) < 2 * streams:
                raise ConfigError(f"data.init_args.{key} ({streams}) is too large for the {name} split "
                                  f"({len(split)} words): each of its streams needs at least 2")
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))

    @property
    def vocab_size(self) -> int:
        """The vocabulary's size (``<unk>`` included): the model's input and output size."""
        self.setup()
        return self.tokenizer.get_vocab_size()

    def windows(self, split: str) -> StreamWindows:
        """The split's windows (``batch_size`` streams for train, ``eval_batch_size`` for val and
        test); under DDP, this process's share of them (each process carries its own streams' state)."""
        rank, world = processes(self)
        key = "batch_size" if split == "train" else "eval_batch_size"
        streams = getattr(self, key)
        local = share(streams, world, key)
        return StreamWindows(self.splits[split], streams, self.seq_len, slice(rank * local, (rank + 1) * local))

    def train_dataloader(self) -> DataLoader:
        windows = self.windows("train")
        skip, self.windows_to_skip = self.windows_to_skip, 0
        return loader(windows, batch_size=None, sampler=InOrder(len(windows), skip))

    def val_dataloader(self) -> DataLoader:
        return loader(self.windows("val"), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return loader(self.windows("test"), batch_size=None)

    def save_tokenizer(self, folder: str | Path) -> Path:
        """Write the tokenizer as ``folder/tokenizer.json`` (atomically)."""
        path = Path(folder) / TOKENIZER_FILE
        with atomic_write(path) as partial:
            partial.write_text(self.tokenizer.to_str(pretty=True), encoding="utf-8")
        return path

    def state_dict(self) -> dict:
        """Saved into every checkpoint: the tokenizer (so that generation uses exactly this one) and
        how many windows of the current epoch were trained on (so that a resumed run goes on from
        the next)."""
        state = {"tokenizer": self.tokenizer.to_str()} if self.tokenizer is not None else {}
        if self.trainer is not None and self.trainer.num_training_batches:
            state["windows_done_in_epoch"] = int(batches_drawn(self.trainer, in_epoch=True) % self.trainer.num_training_batches)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restoring a checkpoint: its vocabulary must be the one these data settings build."""
        self.windows_to_skip = state.get("windows_done_in_epoch", 0)
        if "tokenizer" in state and self.tokenizer is not None:
            saved = Tokenizer.from_str(state["tokenizer"]).get_vocab()
            if saved != self.tokenizer.get_vocab():
                raise ConfigError(f"data.init_args: the checkpoint's vocabulary ({len(saved)} words) is not the one these "
                                  f"data settings build ({self.vocab_size} words); use the settings it was trained with")
