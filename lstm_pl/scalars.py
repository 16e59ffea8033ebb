"""Per-step scalars without a per-step cost: each step's value is kept as a detached tensor where it
was computed (no host synchronisation, no ``self.log``) and written through the loggers' public
``log_metrics`` at its own step, a block at a time (``ScalarBuffer``), by a ``StepRecorder``
callback. ``TrainLoss`` records the training loss this way in every run (``train_loss:`` in
``configs/base.yaml``); ``callbacks.LossCurves`` records its curve so."""

from __future__ import annotations

import abc

import pytorch_lightning as pl
import torch
from jsonargparse.typing import PositiveInt


class ScalarBuffer:
    """One scalar's values at their steps, held until ``flush``: then averaged over the processes
    (one collective for the whole block, not one a step), written to every logger as ``name`` at
    its step (unless ``name`` is None), and returned. Every process must flush at the same points (a step count, never a
    clock: under DDP the collective would wait forever)."""

    def __init__(self, name: str | None):
        self.name = name
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, value: torch.Tensor) -> None:
        self.steps.append(step)
        self.values.append(value.detach().reshape(()))

    def flush(self, trainer: pl.Trainer) -> list[tuple[int, torch.Tensor]]:
        """Write what is held (a process-mean per step) and return it as ``(step, value)``."""
        if not self.steps:
            return []
        values = trainer.strategy.reduce(torch.stack(self.values), reduce_op="mean")
        steps, self.steps, self.values = self.steps, [], []
        if trainer.loggers and self.name:
            for step, value in zip(steps, values.tolist()):  # the block's one host synchronisation
                for logger in trainer.loggers:
                    logger.log_metrics({self.name: value}, step=step)
        return list(zip(steps, values.unbind()))


def recorded(trainer: pl.Trainer) -> int | None:
    """The step at which Lightning's ``self.log(on_step=True)`` would record the batch that just
    trained (its index in the run: ``global_step - 1``), or None where ``log_every_n_steps`` skips it."""
    return trainer.global_step - 1 if trainer.global_step % trainer.log_every_n_steps == 0 else None


class StepRecorder(pl.Callback, abc.ABC):
    """A callback that records one value (``value``) at every step ``recorded`` names, in a
    ``ScalarBuffer`` written as ``name`` (None: kept, not written), and hands each flushed block to
    ``taken``: every ``flush_every`` points, before every checkpoint (so a checkpoint's run folder
    holds every point up to it), and when training ends or fails (in one process: under DDP the
    others may not be there to reduce with)."""

    def __init__(self, name: str | None, flush_every: int):
        self.flush_every = flush_every
        self.buffer = ScalarBuffer(name)

    @abc.abstractmethod
    def value(self, trainer, pl_module, outputs, batch) -> torch.Tensor | None:
        """The value of the step that just trained (None: nothing to record)."""

    def flush_due(self) -> bool:
        return len(self.buffer) >= self.flush_every

    def taken(self, trainer: pl.Trainer, points: list[tuple[int, torch.Tensor]]) -> None:
        """Where a flushed block goes: its last value becomes ``name``'s in ``trainer.callback_metrics``
        (the dictionary Lightning's ``self.log`` fills: the progress lines and the summary read it)."""
        if points and self.buffer.name:
            trainer.callback_metrics[self.buffer.name] = points[-1][1]

    def flush(self, trainer: pl.Trainer) -> None:
        self.taken(trainer, self.buffer.flush(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = recorded(trainer)
        if step is None:
            return
        value = self.value(trainer, pl_module, outputs, batch)
        if value is None:
            return
        self.buffer.add(step, value)
        if self.flush_due():
            self.flush(trainer)

    def on_train_end(self, trainer, pl_module):
        self.flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.world_size == 1:
            self.flush(trainer)
        super().on_exception(trainer, pl_module, exception)


class TrainLoss(StepRecorder):
    """``train/loss``: the loss each training step computed (before its update), recorded every
    ``trainer.log_every_n_steps`` steps at that step, as Lightning's ``self.log`` numbers it, and
    under DDP the mean over the processes; written every ``flush_every`` recorded steps and at the
    first one (the first progress line shows it). The last written value is also ``train/loss`` in
    Lightning's ``callback_metrics`` and ``progress_bar_metrics`` (progress bar and lines, the summary).

    Lightning's own per-step ``self.log`` costs about a millisecond a step on a CPU: more than a
    sine step's arithmetic."""

    def __init__(self, flush_every: PositiveInt = 100):
        super().__init__("train/loss", flush_every)
        self.written = 0

    def value(self, trainer, pl_module, outputs, batch):
        return outputs["loss"] if isinstance(outputs, dict) else outputs

    def flush_due(self) -> bool:
        return super().flush_due() or self.written == 0

    def taken(self, trainer, points):
        super().taken(trainer, points)
        self.written += len(points)
        if points:
            trainer.progress_bar_metrics["train/loss"] = float(points[-1][1])
