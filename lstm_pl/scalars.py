"""Per-step scalars without a per-step cost: each step's value is kept as a detached tensor where it
was computed (no host synchronisation, no ``self.log``) and written through the loggers' public
``log_metrics`` at its own step, a block at a time (``ScalarBuffer``). ``TrainLoss`` records the
training loss this way in every run (``train_loss:`` in ``configs/base.yaml``)."""

from __future__ import annotations

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


class TrainLoss(pl.Callback):
    """``train/loss``: the loss each training step computed (before its update), recorded every
    ``trainer.log_every_n_steps`` steps at that step, as Lightning's ``self.log`` numbers it, and
    under DDP the mean over the processes. Written every ``flush_every`` recorded steps, at the
    first one (the progress line shows it), before every checkpoint and when training ends or
    fails, so a checkpoint's run folder holds every point up to it. The last written value is
    also ``train/loss`` in ``trainer.callback_metrics`` (progress bar and lines, the summary).

    Lightning's own per-step ``self.log`` costs about a millisecond a step on a CPU: more than a
    sine step's arithmetic."""

    def __init__(self, flush_every: PositiveInt = 100):
        self.flush_every = flush_every
        self.buffer = ScalarBuffer("train/loss")
        self.written = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = recorded(trainer)
        if step is None or outputs is None:
            return
        self.buffer.add(step, outputs["loss"] if isinstance(outputs, dict) else outputs)
        if len(self.buffer) >= self.flush_every or self.written == 0:
            self.flush(trainer)

    def flush(self, trainer) -> None:
        """Write the held points; the last one becomes the shown ``train/loss`` (Lightning's
        ``callback_metrics`` and ``progress_bar_metrics``, the dictionaries its ``self.log`` fills)."""
        points = self.buffer.flush(trainer)
        self.written += len(points)
        if points:
            trainer.callback_metrics["train/loss"] = points[-1][1]
            trainer.progress_bar_metrics["train/loss"] = float(points[-1][1])

    def on_train_end(self, trainer, pl_module):
        self.flush(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.flush(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.world_size == 1:  # under DDP the other processes may not be there to reduce with
            self.flush(trainer)
