"""Word-level language modelling data: the corpus (a local file, or a download verified by its
SHA-256), its normalisation and vocabulary (Hugging Face ``tokenizers``, WordLevel), the 90/5/5
position split, and the language-model batching.

Batching, as language models do it (and as ``StreamWindows`` documents): the token stream of a
split is cut into ``batch_size`` contiguous streams, one per batch row, read ``seq_len`` tokens at a
time; the targets are the inputs shifted by one token. Row ``b`` of window ``k + 1`` continues row
``b`` of window ``k``, which is what lets a model carry its hidden state from one window to the next.
"""

from __future__ import annotations

import hashlib
import re
import string
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from jsonargparse.typing import PositiveInt
from tokenizers.trainers import WordLevelTrainer
from torch.utils.data import DataLoader, Dataset, Sampler

from .data import batches_drawn, processes, share
from .errors import ConfigError
from .files import atomic_write

UNKNOWN = "<unk>"
# The recipe's punctuation: string.punctuation except the hyphen and the apostrophe, which stay
# inside words (e.g. "o'er", "well-beloved").
PUNCTUATION = "[" + re.escape("".join(c for c in string.punctuation if c not in "-'")) + "]"
TOKENIZER_FILE = "tokenizer.json"


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


def fit_vocabulary(tokenizer: Tokenizer, words: list[str], min_count: int) -> Tokenizer:
    """Learn the vocabulary from ``words``: every word seen at least ``min_count`` times (the
    recipe's "more than 5" is ``min_count=6``), ordered by frequency, after ``<unk>`` = id 0;
    every other word encodes as ``<unk>``."""
    trainer = WordLevelTrainer(vocab_size=2**31 - 1, min_frequency=min_count, special_tokens=[UNKNOWN],
                               show_progress=False)
    tokenizer.train_from_iterator((words[i : i + 10_000] for i in range(0, len(words), 10_000)), trainer)
    return tokenizer


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
        self.streams = torch.as_tensor(np.asarray(ids[: batch_size * per_stream]), dtype=torch.long)
        self.streams = self.streams.view(batch_size, per_stream)[rows]  # rows: this process's streams under DDP
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, -(-(self.streams.shape[1] - 1) // self.seq_len))  # ceil((n - 1) / T)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        start = k * self.seq_len
        end = min(start + self.seq_len, self.streams.shape[1] - 1)
        return self.streams[:, start:end], self.streams[:, start + 1 : end + 1]


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


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str, target: Path) -> Path:
    """Fetch ``url`` into ``target`` (atomically), checked against ``sha256``: ``target`` is
    either the verified file or absent. Raises ``ConfigError`` naming the key otherwise."""
    with atomic_write(target) as partial:
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    file.write(block)
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors; a bad URL, ValueError
            raise ConfigError(f"data.init_args.url: download of {url} failed ({error}); nothing was kept") from error
        if digest.hexdigest() != sha256.lower():
            raise ConfigError(f"data.init_args.sha256: {url} has SHA-256 {digest.hexdigest()}, expected {sha256}; "
                              f"nothing was kept")
    return target


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

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        source = self.source
        if not source.is_file():
            self.prepare_data()
        if self.sha256 is not None and (found := sha256_of(source)) != self.sha256.lower():
            raise ConfigError(f"data.init_args.sha256: {source} has SHA-256 {found}, expected {self.sha256}")
        tokenizer = word_tokenizer(self.keep_punctuation, self.lowercase)
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"data.init_args.path: {source} is not UTF-8 text (byte {error.start}: "
                              f"{error.object[error.start:error.start + 4]!r}); convert it to UTF-8") from None
        except OSError as error:
            raise ConfigError(f"data.init_args.path: cannot read {source} ({error.strerror})") from None
        words = split_words(tokenizer, text)
        train_end, val_end = split_points(len(words), self.val_fraction, self.test_fraction)
        fit_vocabulary(tokenizer, words[:train_end], self.min_count)
        ids = np.array(tokenizer.encode(words, is_pretokenized=True).ids, dtype=np.int64)
        self.splits = {"train": ids[:train_end], "val": ids[train_end:val_end], "test": ids[val_end:]}
        for name, split in self.splits.items():
            key, streams = ("batch_size", self.batch_size) if name == "train" else ("eval_batch_size", self.eval_batch_size)
            if len(split) < 2 * streams:
                raise ConfigError(f"data.init_args.{key} ({streams}) is too large for the {name} split "
                                  f"({len(split)} words): each of its streams needs at least 2")
        self.tokenizer = tokenizer

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
        return DataLoader(windows, batch_size=None, sampler=InOrder(len(windows), skip))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.windows("val"), batch_size=None, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.windows("test"), batch_size=None, shuffle=False)

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
            state["windows_done_in_epoch"] = int(batches_drawn(self.trainer) % self.trainer.num_training_batches)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restoring a checkpoint: its vocabulary must be the one these data settings build."""
        self.windows_to_skip = state.get("windows_done_in_epoch", 0)
        if "tokenizer" in state and self.tokenizer is not None:
            saved = Tokenizer.from_str(state["tokenizer"]).get_vocab()
            if saved != self.tokenizer.get_vocab():
                raise ConfigError(f"data.init_args: the checkpoint's vocabulary ({len(saved)} words) is not the one these "
                                  f"data settings build ({self.vocab_size} words); use the settings it was trained with")
