"""The orders in which training rows are drawn (``Sampler``s), each able to go on, in a resumed
run, from where the checkpoint was taken: the array tasks' endless streams (``WithReplacement``,
the original's ``OriginalStream``), their shuffled epochs (``Shuffled``) and each process's share
of them under DDP (``RankShard``), used by ``data.py``; the language model's windows in order
(``InOrder``), used by ``text.py``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, TensorDataset


class WithReplacement(Sampler[int]):
    """An endless stream of indices drawn uniformly from ``range(n)`` with replacement, ``chunk``
    at a time from ``generator`` (the original's loop: every step a random batch). Training is
    then counted in optimizer steps (``trainer.max_steps``), as the original counted them. The
    first ``skip`` chunks are drawn and dropped: a resumed run continues the same stream."""

    def __init__(self, n: int, chunk: int, generator: torch.Generator, skip: int = 0):
        self.n, self.chunk, self.generator, self.skip = n, chunk, generator, skip

    def __iter__(self) -> Iterator[int]:
        for _ in range(self.skip):
            torch.randint(high=self.n, size=(self.chunk,), generator=self.generator)
        while True:
            yield from torch.randint(high=self.n, size=(self.chunk,), generator=self.generator).tolist()


class OriginalStream(Sampler[int]):
    """The original's minibatches: ``numpy.random.choice(n, size=batch)`` every step, from the
    numpy stream where the data generation left it (``state``), endlessly; the first ``skip``
    draws dropped (a resumed run)."""

    def __init__(self, n: int, batch: int, state: tuple, skip: int = 0):
        self.n, self.batch, self.state, self.skip = n, batch, state, skip

    def __iter__(self) -> Iterator[int]:
        rng = np.random.RandomState()
        rng.set_state(self.state)
        for _ in range(self.skip):
            rng.choice(self.n, size=self.batch)
        while True:
            yield from rng.choice(self.n, size=self.batch).tolist()


class Shuffled(RandomSampler):
    """Ordinary epochs, each a shuffled pass: ``RandomSampler`` and its exact order (one
    ``torch.randperm`` of ``generator`` per pass; another, unused, when a pass runs to its end),
    made resumable. ``resume`` (from ``state``) restarts where a checkpoint was taken: mid-pass, the
    generator as that pass began and its first ``in_pass`` indices dropped; at a pass's end, the
    generator as it was then."""

    def __init__(self, data: TensorDataset, generator: torch.Generator):
        super().__init__(data, generator=generator)
        self.pass_start = generator.get_state()
        self.restart: tuple[torch.Tensor, int] | None = None

    def state(self, in_pass: int, pass_done: bool) -> dict:
        """What a checkpoint taken after ``in_pass`` indices of this pass needs to resume it."""
        return {"generator": self.generator.get_state() if pass_done else self.pass_start,
                "skip": 0 if pass_done else in_pass}

    def resume(self, state: dict) -> None:
        self.restart = (state["generator"], state["skip"])

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self.restart is not None:
            (generator_state, skip), self.restart = self.restart, None
            self.generator.set_state(generator_state)
        self.pass_start = self.generator.get_state()
        for position, index in enumerate(super().__iter__()):
            if position >= skip:
                yield index


class RankShard(Sampler[int]):
    """This process's share of every global batch under DDP: ``stream`` yields global batches of
    ``batch`` indices one after the other; rank r of w takes positions r·batch/w .. (r+1)·batch/w
    of each, so the w processes together train on exactly the one-process batches. An epoch's
    last, partial batch of n indices is shared as evenly as w allows (n//w or n//w + 1 each, so
    every process takes the same number of steps as one process; with n < w it is dropped)."""

    def __init__(self, stream: Sampler[int], batch: int, rank: int, world: int):
        self.stream, self.batch, self.rank, self.world = stream, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        local = self.batch // self.world
        chunk: list[int] = []
        for index in self.stream:
            chunk.append(index)
            if len(chunk) == self.batch:
                yield from chunk[self.rank * local : (self.rank + 1) * local]
                chunk = []
        if len(chunk) >= self.world:
            small, larger = divmod(len(chunk), self.world)
            start = self.rank * small + min(self.rank, larger)
            yield from chunk[start : start + small + (self.rank < larger)]


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
