"""Sequences held in memory (``ArrayDataModule``): the regression tasks' data, generated exactly as
the original did, and their DataModules (the images of ``images.py`` build on the same base).

Both regression tasks are small arrays: ``x`` (N, T, F) sequences and ``y`` (N, 1) targets,
split 90/10 as the original's ``sklearn.model_selection.train_test_split(test_size=0.1,
random_state=1)`` did (reproduced here index for index, without scikit-learn). The original drew
everything from numpy's global stream after ``numpy.random.seed(seed)``; here each DataModule
draws from its own ``RandomState(seed)`` (the same numbers, without touching the global state),
which ``sampling: original`` then continues for the minibatches, as the original's loop did.
The orders the training rows are drawn in are ``sampling.py``'s; the loaders, ``loading.py``'s.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal, Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt
from torch.utils.data import DataLoader, TensorDataset

from .errors import ConfigError
from .loading import Rows, batches_drawn, loader, processes, share
from .sampling import OriginalStream, RankShard, Shuffled, WithReplacement


def train_test_split_indices(n: int, test_size: float | int = 0.1, random_state: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``train_test_split(range(n), test_size=..., random_state=...)``: a
    permutation from ``RandomState(random_state)``; its first ceil(test_size·n) indices (an int
    ``test_size``: that many, as scikit-learn reads it) are the test set, the rest the training
    set, both in permutation order. Returns (train, test)."""
    n_test = test_size if isinstance(test_size, int) else math.ceil(test_size * n)
    permutation = np.random.RandomState(random_state).permutation(n)
    return permutation[n_test:], permutation[:n_test]


def noisy_sine(length: int = 251, period: float = 100.0, noise: float = 0.05, seed: int = 12,
               rng: np.random.RandomState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The original's wave: f(t) = sin(2π·(t / period)) + noise · U(-1, 1), t = 0 .. length-1,
    computed in the original's order (t / period first: in float64 that differs from 2πt / period
    in the last bits of 83 of the 251 values), the noise one ``uniform(-1, 1, length)`` call from
    ``rng`` (default ``RandomState(seed)``, the stream of ``numpy.random.seed(seed)``).
    Returns (noisy, clean)."""
    rng = np.random.RandomState(seed) if rng is None else rng
    draws = noise * rng.uniform(low=-1.0, high=1.0, size=length)
    clean = np.sin(2.0 * np.pi * (np.arange(length) / period))
    return clean + draws, clean


def sliding_windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window`` values and the value after each: x (N, window, 1), y (N, 1),
    N = len(series) - window."""
    n = len(series) - window
    x = np.stack([series[i : i + window] for i in range(n)])[..., None]
    return x, series[window:, None]


def adding_problem(t: int = 250, n_sequence: int = 10_000, seed: int = 12,
                   rng: np.random.RandomState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem as the original generates it from ``rng`` (default ``RandomState(seed)``):
    one ``uniform(0, 1, (n, t))`` call for the signals; then, sequence by sequence,
    ``permutation(arange(t))[:2]`` marks two positions. x (n, t, 2) = (signal, mask),
    y (n, 1) = the sum of the two marked signals."""
    rng = np.random.RandomState(seed) if rng is None else rng
    signals = rng.uniform(low=0.0, high=1.0, size=(n_sequence, t))
    masks = np.zeros((n_sequence, t))
    for i in range(n_sequence):
        masks[i, rng.permutation(np.arange(t))[:2]] = 1.0
    x = np.stack([signals, masks], axis=-1)
    y = (signals * masks).sum(axis=1, keepdims=True)
    return x, y


def memory_available() -> int | None:
    """Bytes of memory this machine can still hand out (Linux's ``MemAvailable``); None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(rows: TensorDataset, drawn: int, setting: int, key: str = "batch_size") -> None:
    """Refuse, before anything is drawn, training batches whose rows alone need more memory than
    the machine has free: ``drawn`` rows at a time on this machine (every process's share), set by
    ``data.init_args.<key>`` = ``setting``. Drawn with replacement, a batch may be far larger than
    the data, and assembling it would otherwise end in the kernel's out-of-memory kill, with
    nothing said. What the model needs beyond the batch is left to the allocator's own error."""
    row_bytes = sum(tensor[0].numel() * tensor.element_size() for tensor in rows.tensors)
    need, free = drawn * row_bytes, memory_available()
    if free is not None and need > free:
        raise ConfigError(f"data.init_args.{key} ({setting}): one batch's rows need {need / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB of memory free; lower it")


Sampling = Literal["with_replacement", "original", "epochs"]


@dataclass
class Arrays:
    """What an ``ArrayDataModule`` loads: ``x`` (N, T, F) and ``y`` (N, 1) float targets or (N,)
    integer classes, split into training and validation; ``test``, the held-out test set's (x, y),
    or None to test on the validation split."""

    x: np.ndarray
    y: np.ndarray
    test: tuple[np.ndarray, np.ndarray] | None = None


def as_dataset(x: np.ndarray, y: np.ndarray) -> Rows:
    """float32 inputs; float32 targets, or int64 class labels where ``y`` holds integers."""
    labels = np.issubdtype(y.dtype, np.integer)
    return Rows(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long if labels else torch.float32))


class ArrayDataModule(pl.LightningDataModule, abc.ABC):
    """Sequences held in memory, split into training and validation the original's way
    (``val_size``, a fraction or, as in scikit-learn, a count; ``split_seed``: see
    ``train_test_split_indices``); subclasses only ``load`` the arrays.

    Training batches (``sampling``), each an endless stream, so the budget is ``trainer.max_steps``:
    ``with_replacement``, batches drawn with replacement by a torch generator seeded with
    ``sampling_seed``; ``original`` (generated data only), the original's ``numpy.random.choice``
    batches, continuing the numpy stream after the data generation (``OriginalStream``). Or
    ``epochs``: ordinary epochs, each a shuffled pass (the budget ``trainer.max_epochs``).

    ``batch_size`` is the global batch: under DDP each process trains on its share of the same
    stream's batches (``RankShard``; Lightning's own distributed sampler is switched off in
    ``configs/base.yaml``), so the processes together see the one-process batches.

    Resuming: every checkpoint records how many training batches were drawn, and the streams skip
    as many when they start again (``epochs``: the shuffle's generator and the position in its
    pass, ``Shuffled``), so a resumed run sees the batches an uninterrupted one would.
    """

    input_size: int  # features per time step: the model's input_size (linked by the CLI)

    def __init__(self, batch_size: PositiveInt = 10, sampling: Sampling = "with_replacement",
                 val_size: Union[int, float] = 0.1, split_seed: int = 1, sampling_seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()  # every subclass's settings too (Lightning reads the __init__ chain): hparams.yaml, HPARAMS
        self.batch_size, self.sampling = batch_size, sampling
        if not (val_size >= 1 if isinstance(val_size, int) else 0 < val_size < 1):
            raise ConfigError(f"data.init_args.val_size must be a fraction between 0 and 1 or a whole number of "
                              f"sequences, got {val_size}")
        self.val_size, self.split_seed, self.sampling_seed = val_size, split_seed, sampling_seed
        self.num_workers = num_workers
        self.x: np.ndarray | None = None
        self.batches_to_skip, self.shuffle_to_resume = 0, None
        self.shuffle: Shuffled | None = None

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the training batches drawn so far (micro-batches: ``batches_drawn``),
        and with ``sampling: epochs`` where the shuffle stands (``Shuffled.state``)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        state = {"batches_drawn": batches_drawn(trainer)}
        if self.shuffle is not None:
            in_pass = batches_drawn(trainer, in_epoch=True)
            state["shuffle"] = self.shuffle.state(in_pass * self.batch_size, in_pass >= trainer.num_training_batches)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.batches_to_skip, self.shuffle_to_resume = state.get("batches_drawn", 0), state.get("shuffle")

    @abc.abstractmethod
    def load(self) -> Arrays:
        """The arrays to split into training and validation, and the held-out test set if any."""

    def original_stream(self) -> tuple[tuple, int]:
        """numpy's stream state where the data generation left it, and how many minibatch draws
        an earlier run in the same process took from it first (``sampling: original``)."""
        raise ConfigError(f"data.init_args.sampling: original continues the numpy stream that generated the data; "
                          f"{type(self).__name__} generates none (use with_replacement or epochs)")

    def prepare_data(self) -> None:
        """One process: the training batch checked here (``check_training_batch``), before the run
        writes anything (Lightning calls this ahead of its loggers)."""
        if self.trainer is not None and self.trainer.state.fn == "fit" and processes(self)[1] == 1:
            self.load_arrays()
            self.check_training_batch()

    def setup(self, stage: str | None = None) -> None:
        """Several processes: the training batch checked here, by every process alike (in
        ``prepare_data`` only the first would stop, and the others wait for it at a barrier)."""
        self.load_arrays()
        if stage == "fit" and processes(self)[1] > 1:
            self.check_training_batch()

    def check_training_batch(self) -> None:
        """The global batch divides among the processes (``share``), and the rows the processes of
        this machine draw at a time fit in its free memory (``check_batch_fits``)."""
        local = share(self.batch_size, processes(self)[1])
        per_machine = self.trainer.num_devices if self.trainer is not None else 1
        drawn = local if self.sampling != "epochs" else min(local, len(self.train_set))
        check_batch_fits(self.train_set, drawn * per_machine, self.batch_size)

    def load_arrays(self) -> None:
        """``load`` once; the training, validation and test sets."""
        if self.x is not None:
            return
        arrays = self.load()
        self.x, self.y = arrays.x, arrays.y
        self.train_idx, self.val_idx = train_test_split_indices(len(self.x), self.val_size, self.split_seed)
        if len(self.train_idx) == 0:
            raise ConfigError(f"data.init_args.val_size ({self.val_size}) leaves none of the {len(self.x)} sequences "
                              f"for training: make more sequences or lower val_size")
        self.train_set = as_dataset(self.x[self.train_idx], self.y[self.train_idx])
        self.val_set = as_dataset(self.x[self.val_idx], self.y[self.val_idx])
        self.test_set = self.val_set if arrays.test is None else as_dataset(*arrays.test)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.sampling_seed)
        skip, self.batches_to_skip = self.batches_to_skip, 0
        if self.sampling == "with_replacement":
            sampler = WithReplacement(len(self.train_set), self.batch_size, generator, skip)
        elif self.sampling == "original":
            state, drawn_before = self.original_stream()
            sampler = OriginalStream(len(self.train_set), self.batch_size, state, drawn_before + skip)
        else:
            sampler = self.shuffle = Shuffled(self.train_set, generator)
            if self.shuffle_to_resume is not None:
                sampler.resume(self.shuffle_to_resume)
                self.shuffle_to_resume = None
        rank, world = processes(self)
        local = share(self.batch_size, world)
        if world > 1:
            sampler = RankShard(sampler, self.batch_size, rank, world)
        return loader(self.train_set, batch_size=local, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val_set, batch_size=max(self.batch_size, 256), num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        """The held-out test set where there is one, else (the original had no third split) the
        validation set."""
        return loader(self.test_set, batch_size=max(self.batch_size, 256), num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return loader(Rows(torch.tensor(self.x[self.val_idx], dtype=torch.float32)),
                          batch_size=max(self.batch_size, 256))


class GeneratedDataModule(ArrayDataModule):
    """Data the original generated from ``numpy.random.seed(seed)`` (sine, adding): drawn here from
    ``RandomState(seed)`` in the original's order by ``make_arrays``.

    ``test_seed``: where set, ``test`` scores a fresh draw of the whole data set from
    ``RandomState(test_seed)`` (the same size), which neither training nor early stopping sees;
    unset, ``test`` reports on the validation split (the original had no third split).

    ``stream_start`` (``sampling: original``): the minibatch draws an earlier fit in the same
    process took from numpy's stream before this run's first (the seed's adding main2.py trained
    its RNN right after its LSTM's 500 draws: 500).
    """

    def __init__(self, seed: int = 12, test_seed: Optional[int] = None, stream_start: NonNegativeInt = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed, self.test_seed, self.stream_start = seed, test_seed, stream_start

    @abc.abstractmethod
    def make_arrays(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        """x (N, T, F) and y (N, 1), as numpy arrays, drawing from ``rng`` as the original did."""

    def make_test_arrays(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        """The held-out draw (``test_seed``): by default the data set's size and kind."""
        return self.make_arrays(rng)

    def load(self) -> Arrays:
        rng = np.random.RandomState(self.seed)
        x, y = self.make_arrays(rng)
        self.stream_after_generation = rng.get_state()
        held_out = None if self.test_seed is None else self.make_test_arrays(np.random.RandomState(self.test_seed))
        return Arrays(x, y, held_out)

    def original_stream(self) -> tuple[tuple, int]:
        return self.stream_after_generation, self.stream_start


@dataclass(frozen=True)
class Waveform:
    """What the sine figure draws: the noisy series the model reads, the clean wave, and the
    window length (the first prediction is for t = window)."""

    noisy: np.ndarray
    clean: np.ndarray
    window: int


class SineDataModule(GeneratedDataModule):
    """Exercise 1: windows of the noisy sine wave predict the next value (226 windows of 25)."""

    input_size = 1

    def __init__(self, length: PositiveInt = 251, period: PositiveFloat = 100.0, noise: float = 0.05,
                 window: PositiveInt = 25, **kwargs):
        super().__init__(**kwargs)
        if window >= length:
            raise ConfigError(f"data.init_args.window ({window}) must be shorter than the series "
                              f"(data.init_args.length = {length})")
        self.length, self.period, self.noise, self.window = length, period, noise, window

    def make_arrays(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        series, _ = noisy_sine(self.length, self.period, self.noise, rng=rng)
        return sliding_windows(series, self.window)

    @property
    def waveform(self) -> Waveform:
        """The series the model trains on (seed ``seed``) and the clean wave, for the figure."""
        noisy, clean = noisy_sine(self.length, self.period, self.noise, rng=np.random.RandomState(self.seed))
        return Waveform(noisy, clean, self.window)


class AddingDataModule(GeneratedDataModule):
    """Exercise 2: the adding problem, a long-range dependency over ``t`` steps.

    ``test_sequences``: how many sequences the held-out draw (``test_seed``) makes; unset, as many
    as the data set (``n_sequence``)."""

    input_size = 2

    def __init__(self, t: int = 250, n_sequence: int = 10_000, test_sequences: Optional[PositiveInt] = None, **kwargs):
        super().__init__(**kwargs)
        if t < 2:
            raise ConfigError(f"data.init_args.t must be at least 2 (two marked positions), got {t}")
        if n_sequence < 2:
            raise ConfigError(f"data.init_args.n_sequence must be at least 2, got {n_sequence}")
        self.t, self.n_sequence, self.test_sequences = t, n_sequence, test_sequences

    def make_arrays(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        return adding_problem(self.t, self.n_sequence, rng=rng)

    def make_test_arrays(self, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        return adding_problem(self.t, self.test_sequences or self.n_sequence, rng=rng)
