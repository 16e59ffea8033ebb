"""How every DataModule hands its batches to Lightning: the ``DataLoader`` (``loader``, with rows
fetched a batch at a time, ``Rows``), each process's share of a batch under DDP (``processes``,
``share``), and how many batches a run has drawn, where a resumed run's data goes on from
(``batches_drawn``). Below ``data.py`` and ``text.py``, which both use it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from .errors import ConfigError


class Rows(TensorDataset):
    """Rows held in tensors, fetched a whole batch at a time: the DataLoader hands ``__getitems__``
    the batch's indices and gets ``[x[indices], y[indices]]``, one indexing per tensor, where a row
    at a time costs a Python call per row and a stack (and a batch of millions minutes before its
    first step). The values and their order are the row-at-a-time batch's. Load it with
    ``collate_fn=Rows.collate``."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.tensor(indices, dtype=torch.long)
        return [tensor[index] for tensor in self.tensors]

    @staticmethod
    def collate(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        """``__getitems__`` has made the batch already (a list, as ``default_collate`` makes one)."""
        return batch


def loader(dataset, **settings) -> DataLoader:
    """A ``DataLoader`` that seeds each iterator from a generator of its own, not from torch's
    global one: starting an epoch or a validation then leaves the global stream (dropout's masks)
    where it was, so that a resumed run sees the stream the uninterrupted one saw."""
    if isinstance(dataset, Rows):
        settings.setdefault("collate_fn", Rows.collate)
    return DataLoader(dataset, generator=torch.Generator().manual_seed(0), **settings)


def processes(module: pl.LightningDataModule) -> tuple[int, int]:
    """(rank, world size) of the Trainer the DataModule is attached to; (0, 1) without one."""
    trainer = module.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def share(batch_size: int, world: int, key: str = "batch_size") -> int:
    """Each process's part of a global batch (the setting ``data.init_args.<key>``); the batch must
    divide evenly among the processes."""
    if batch_size % world:
        raise ConfigError(f"data.init_args.{key} ({batch_size}) is the global batch: it must divide evenly "
                          f"among the {world} processes")
    return batch_size // world


def batches_drawn(trainer: pl.Trainer, in_epoch: bool = False) -> int:
    """The training batches a run has consumed so far (``in_epoch``: in the current epoch): where a
    resumed run's data must go on from. Micro-batches, as Lightning's loop counts them and restores
    them on resume (a batch saved at ``on_train_batch_end`` included), not optimizer steps ×
    accumulation: an epoch whose batches the accumulation does not divide ends on a shorter step,
    and a checkpoint may be saved between two steps (a validation every n batches)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return (progress.current if in_epoch else progress.total).processed
