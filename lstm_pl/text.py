"""Word-level language modelling data (``TextDataModule``): the corpus, a local file or a download
verified by its SHA-256, prepared once by ``corpus.py`` (tokenised into a memory-mapped id file
and its vocabulary, reused while the text and the settings match), and its splits read as a
language model reads them.

Batching, as language models do it (and as ``StreamWindows`` documents): the token stream of a
split is cut into ``batch_size`` contiguous streams, one per batch row, read ``seq_len`` tokens at a
time; the targets are the inputs shifted by one token. Row ``b`` of window ``k + 1`` continues row
``b`` of window ``k``, which is what lets a model carry its hidden state from one window to the next.
"""

from __future__ import annotations

import errno
import hashlib
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse.typing import PositiveInt
from pytorch_lightning.utilities import rank_zero_warn
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from .corpus import TOKENIZER_FILE, UNKNOWN, discard, file_stat, prepare_corpus, prepared_problem, read_prepared, word_tokenizer
from .errors import ConfigError
from .files import atomic_write, download, is_sha256, remove_stale_partials, sha256_of
from .loading import batches_drawn, loader, processes, share
from .sampling import InOrder


class StreamWindows(Dataset):
    """A split's token ids as ``batch_size`` parallel streams, read in windows of ``seq_len``.

    With n = len(ids) // batch_size (the last len(ids) % batch_size tokens are dropped), row b is
    the stream ``ids[b·n : (b+1)·n]`` and item k is the whole batch for window k:

        x = streams[:, s_k : s_k + T_k],   y = streams[:, s_k + 1 : s_k + T_k + 1]

    both (batch_size, T_k) int64, s_k = T_0 + ... + T_{k-1}; T_k = seq_len, or the k-th of
    ``lengths`` where given (AWD-LSTM's variable windows, ``variable_lengths``). The last window is
    shorter where the lengths do not end exactly at n - 1, and nothing wraps around. Read with
    ``DataLoader(batch_size=None)``, in order.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, rows: slice = slice(None),
                 lengths: np.ndarray | None = None):
        per_stream = len(ids) // batch_size
        # A view, not a copy: over a memory-mapped id file only the windows read are loaded.
        self.streams = np.asarray(ids[: batch_size * per_stream]).reshape(batch_size, per_stream)[rows]
        targets = self.streams.shape[1] - 1
        if lengths is None:
            lengths = np.full(max(0, -(-targets // seq_len)), seq_len)  # ceil((n - 1) / T) windows
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.starts = self.starts[: np.searchsorted(self.starts, targets, side="left") + 1]
        self.starts[-1] = min(self.starts[-1], targets)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        start, end = int(self.starts[k]), int(self.starts[k + 1])
        window = torch.from_numpy(self.streams[:, start : end + 1].astype(np.int64))
        return window[:, :-1], window[:, 1:]


def variable_lengths(seq_len: int, targets: int, rng: np.random.Generator) -> np.ndarray:
    """AWD-LSTM's window lengths (Merity et al. 2018, section 4.1; their ``main.py``): each window
    T = max(5, ⌊N(b, 5)⌋) words, b = seq_len with probability 0.95, else seq_len / 2, drawn until
    they cover ``targets`` words; the epoch's windows then start at other words each epoch."""
    lengths, covered = [], 0
    while covered < targets:
        base = seq_len if rng.random() < 0.95 else seq_len / 2
        lengths.append(max(5, int(rng.normal(base, 5))))
        covered += lengths[-1]
    return np.asarray(lengths, dtype=np.int64)


class TextDataModule(pl.LightningDataModule):
    """A plain-text corpus for word-level language modelling (issue 4: tiny Shakespeare).

    Source: ``path`` if that file exists, else ``url`` downloaded once by ``prepare_data`` into
    ``cache_dir`` (``sha256`` required with a URL). When ``sha256`` is set, the file used is
    checked against it. The words are split by position, train / validation / test =
    (1 - val_fraction - test_fraction) / val_fraction / test_fraction; the vocabulary is learnt
    from the training split only (``min_count``, see ``corpus.fit_vocabulary``); batches are
    ``StreamWindows``: training reads ``batch_size`` streams; validation and test read
    ``eval_batch_size`` streams (default 10, as pytorch/examples' word_language_model scores), each
    from its start to its end with the state carried, so that only the first ``seq_len`` words of
    each stream are scored from a cold state (with the training batch of 100 a third of every
    ~100-word stream would be). ``vocab_size`` (read by the CLI to size the model) prepares the data on
    first use. The tokenizer goes into every checkpoint (``state_dict``); ``save_tokenizer``
    writes it as a file (the ``SaveTokenizer`` callback, into the run folder). The text's structure
    as options: ``lowercase: false`` keeps the case, ``keep_punctuation`` the punctuation marks as
    words, ``line_breaks`` every line break as a word (a blank line, the play's speaker turn, is two):
    ``generate`` then writes lines that look like the play.

    ``variable_windows``: training windows of AWD-LSTM's random lengths around ``seq_len``
    (``variable_lengths``), drawn anew each epoch from ``window_seed`` and the epoch (so a resumed
    run reads the same ones; needs ``trainer.reload_dataloaders_every_n_epochs: 1``); the model
    then scales each step's learning rate by its window's length / ``seq_len`` (``lr_window``,
    linked), as AWD-LSTM does. Validation and test keep windows of ``seq_len``.
    """

    def __init__(self, path: str | None = "../shared/data/tinyshakespeare.txt", url: str | None = None,
                 sha256: str | None = None, cache_dir: str = ".cache/data", keep_punctuation: bool = False,
                 lowercase: bool = True, min_count: PositiveInt = 6, batch_size: PositiveInt = 100,
                 seq_len: PositiveInt = 50, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 eval_batch_size: PositiveInt = 10, line_breaks: bool = False, variable_windows: bool = False,
                 window_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()  # hparams.yaml and TensorBoard's HPARAMS
        if path is None and url is None:
            raise ConfigError("data.init_args.path: give a corpus file (path) or a download (url + sha256)")
        if url is not None and not is_sha256(sha256):
            raise ConfigError(f"data.init_args.sha256 must be the 64 hex digits of the file at data.init_args.url, "
                              f"got {sha256!r}")
        if path is not None and url is None and not Path(path).is_file():
            raise ConfigError(f"data.init_args.path: no such file {path} (or give url + sha256 to download it)")
        for key, value in dict(val_fraction=val_fraction, test_fraction=test_fraction).items():
            if not 0.0 < value < 0.5:
                raise ConfigError(f"data.init_args.{key} must lie in (0, 0.5), got {value}")
        self.path, self.url, self.sha256, self.cache_dir = path, url, sha256, Path(cache_dir)
        self.keep_punctuation, self.lowercase, self.min_count = keep_punctuation, lowercase, min_count
        self.line_breaks, self.variable_windows, self.window_seed = line_breaks, variable_windows, window_seed
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
        """One process: the settings checked (``check_windows``) before the run writes anything
        (Lightning calls this ahead of its loggers); the text downloaded if it is not here."""
        if processes(self)[1] == 1:
            self.check_windows()
        if not self.source.is_file():
            download(self.url, self.sha256, self.source)

    def check_windows(self) -> None:
        """A fit with ``variable_windows`` needs the training loader made anew each epoch (else every
        epoch would read the first epoch's windows): one line naming the setting to add."""
        trainer = self.trainer
        if (self.variable_windows and trainer is not None and trainer.state.fn == "fit"
                and trainer.reload_dataloaders_every_n_epochs != 1):
            raise ConfigError("data.init_args.variable_windows draws new windows each epoch: set "
                              "trainer.reload_dataloaders_every_n_epochs: 1")

    def prepared_folder(self, source: Path, source_sha256: str) -> Path:
        """Where ``source`` is kept tokenised: one folder per text (by its SHA-256) and settings."""
        return self.cache_dir / "prepared" / f"{source.stem}-{source_sha256[:16]}-{self.settings_key}"

    @property
    def settings_key(self) -> str:
        """8 hex digits naming the settings that decide the ids."""
        settings = dict(lowercase=self.lowercase, keep_punctuation=self.keep_punctuation, min_count=self.min_count,
                        val_fraction=self.val_fraction, test_fraction=self.test_fraction)
        if self.line_breaks:  # only where set: the folders prepared before this setting keep their names
            settings["line_breaks"] = True
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
        been prepared before (``prepare_corpus``); the ids stay on disk, memory-mapped. Several
        processes: each checks the settings here (in ``prepare_data`` only the first would stop)."""
        if processes(self)[1] > 1:
            self.check_windows()
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
                prepare_corpus(source, word_tokenizer(self.keep_punctuation, self.lowercase, self.line_breaks), self.min_count,
                               self.val_fraction, self.test_fraction, folder, about=about)
            except OSError as error:
                if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                    raise
                raise ConfigError(f"data.init_args.cache_dir: cannot write the prepared corpus into {folder.parent} "
                                  f"({error.strerror or error}); free space or choose another cache_dir") from None
        splits, tokenizer = read_prepared(folder)
        for name, split in splits.items():
            key, streams = self.streams_of(name)
            if len(split) < 2 * streams:
                raise ConfigError(f"data.init_args.{key} ({streams}) is too large for the {name} split "
                                  f"({len(split)} words): each of its streams needs at least 2")
        self.splits, self.tokenizer = splits, tokenizer

    def streams_of(self, split: str) -> tuple[str, int]:
        """The setting that says in how many streams ``split`` is read, and its value: ``batch_size``
        for train, ``eval_batch_size`` for val and test."""
        key = "batch_size" if split == "train" else "eval_batch_size"
        return key, getattr(self, key)

    @property
    def unknown_id(self) -> int:
        """``<unk>``'s id, for the model's perplexity without it (read by the CLI, as ``vocab_size``)."""
        self.setup()
        return self.tokenizer.token_to_id(UNKNOWN)

    @property
    def vocab_size(self) -> int:
        """The vocabulary's size (``<unk>`` included): the model's input and output size."""
        self.setup()
        return self.tokenizer.get_vocab_size()

    def windows(self, split: str) -> StreamWindows:
        """The split's windows (``batch_size`` streams for train, ``eval_batch_size`` for val and
        test); under DDP, this process's share of them (each process carries its own streams' state)."""
        rank, world = processes(self)
        key, streams = self.streams_of(split)
        local = share(streams, world, key)
        lengths = None
        if split == "train" and self.variable_windows:
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            targets = len(self.splits[split]) // streams - 1
            lengths = variable_lengths(self.seq_len, targets, np.random.default_rng([self.window_seed, epoch]))
        return StreamWindows(self.splits[split], streams, self.seq_len, slice(rank * local, (rank + 1) * local), lengths)

    @property
    def lr_window(self) -> int | None:
        """With ``variable_windows``, the window length at which a step takes the configured learning
        rate (``seq_len``; read by the CLI for the model's ``lr_window``); else None."""
        return int(self.seq_len) if self.variable_windows else None

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
