"""What decides whether training goes on: the guard every run trains under (a non-finite training
loss never reaches the weights; ``non_finite:`` in ``configs/base.yaml``), and a stop at the first
validation that meets a set of criteria (``StopWhenSolved``)."""

from __future__ import annotations

import sys
from typing import Literal

import pytorch_lightning as pl
import torch
from jsonargparse.typing import OpenUnitInterval, PositiveInt

from .errors import TrainingError


class NonFiniteLoss(pl.Callback):
    """A non-finite training loss never reaches the weights. ``stop`` (default): the run stops at
    that step, before its backward pass and update, with one line naming the step and the last
    finite loss (``TrainingError``; the CLI exits 2). ``skip``: the batch's update is dropped (every
    gradient set to None, so no optimizer moves anything) and counted as ``train/skipped_batches``;
    a run that skips ``max_skipped_in_a_row`` steps in a row, or more than ``max_skipped_share`` of
    its steps by its end, learnt nothing worth its exit 0: it fails with one line (its checkpoints
    kept). The count is reported at the end. Costs one host synchronisation per step (reading
    whether the loss is finite)."""

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skipped_share: OpenUnitInterval = 0.5,
                 max_skipped_in_a_row: PositiveInt = 100):
        self.action, self.max_share, self.max_in_a_row = action, max_skipped_share, max_skipped_in_a_row
        self.last_finite: tuple[int, torch.Tensor] | None = None
        self.skipped, self.skip_this_step, self.in_a_row = 0, False, 0

    def on_before_backward(self, trainer, pl_module, loss):
        step = trainer.global_step + 1
        if bool(torch.isfinite(loss)):
            self.last_finite = (step, loss.detach())
            return
        if self.action == "skip":
            self.skip_this_step = True
            return
        last = ("none before it" if self.last_finite is None else
                f"the last finite one {float(self.last_finite[1]):.6g} at step {self.last_finite[0]}")
        raise TrainingError(f"trainer: the training loss is {float(loss.detach())} at step {step} ({last}); the run stopped "
                            f"before that update. Lower the learning rate (optimizer.init_args.lr), clip gradients "
                            f"(trainer.gradient_clip_val) or set non_finite.action: skip")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self.skip_this_step:
            self.in_a_row = 0
            return
        for parameter in pl_module.parameters():
            parameter.grad = None
        self.skipped, self.skip_this_step, self.in_a_row = self.skipped + 1, False, self.in_a_row + 1
        pl_module.log("train/skipped_batches", float(self.skipped))
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingError(f"non_finite.max_skipped_in_a_row: the last {self.in_a_row} steps (to step "
                                f"{trainer.global_step + 1}) all had a non-finite loss and were skipped; the run "
                                f"stopped. Lower the learning rate (optimizer.init_args.lr) or clip gradients")

    def on_train_end(self, trainer, pl_module):
        if not self.skipped:
            return
        steps = max(trainer.global_step, 1)
        if self.skipped > self.max_share * steps:
            raise TrainingError(f"non_finite.max_skipped_share: {self.skipped} of {steps} steps had a non-finite "
                                f"loss and were skipped (more than {self.max_share:g}): the run learnt little. "
                                f"Lower the learning rate (optimizer.init_args.lr) or clip gradients")
        if trainer.is_global_zero:
            sys.stderr.write(f"lstm_pl: skipped {self.skipped} of {steps} steps for a non-finite loss "
                             f"(non_finite.action: skip)\n")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.in_a_row = state["skipped"], state.get("in_a_row", 0)


class StopWhenSolved(pl.Callback):
    """Stop at the first validation where every criterion holds: each metric of ``at_most`` at or
    below its value, each of ``at_least`` at or above its value. Hochreiter and Schmidhuber's
    "solved" for the adding problem is two at once (``at_most: {val/loss: 0.01}``, ``at_least:
    {val/within_tolerance: 0.9995}``), which Lightning's ``EarlyStopping`` (one metric) cannot say.
    A metric a validation did not log counts as not met. Under DDP the processes stop together."""

    def __init__(self, at_most: dict[str, float] | None = None, at_least: dict[str, float] | None = None):
        self.at_most, self.at_least = dict(at_most or {}), dict(at_least or {})
        if not self.at_most and not self.at_least:
            raise ValueError("StopWhenSolved needs at least one criterion (at_most or at_least)")
        self.solved_at: int | None = None

    def met(self, metrics: dict) -> bool:
        value = lambda name: float(metrics[name]) if name in metrics else None
        return (all((v := value(name)) is not None and v <= bound for name, bound in self.at_most.items())
                and all((v := value(name)) is not None and v >= bound for name, bound in self.at_least.items()))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if trainer.strategy.reduce_boolean_decision(self.met(trainer.callback_metrics), all=True):
            self.solved_at = trainer.global_step
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        """A run resumed from a checkpoint saved when it was solved (killed before its end) stays
        stopped there, as the uninterrupted run did."""
        if self.solved_at is not None and self.solved_at <= trainer.global_step:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"solved_at": self.solved_at}

    def load_state_dict(self, state: dict) -> None:
        self.solved_at = state.get("solved_at")
