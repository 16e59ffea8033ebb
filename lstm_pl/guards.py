"""What decides whether training goes on: the guard every run trains under (a non-finite training
loss never reaches the weights; ``non_finite:`` in ``configs/base.yaml``), and a stop at the first
validation that meets a set of criteria (``StopWhenSolved``)."""

from __future__ import annotations

import sys
from typing import Literal, NamedTuple

import pytorch_lightning as pl
import torch
from jsonargparse.typing import OpenUnitInterval, PositiveInt

from .errors import ConfigError, TrainingError


class NonFiniteLoss(pl.Callback):
    """A non-finite training loss never reaches the weights. ``stop`` (default): the run stops at
    that step, before its backward pass and update, with one line naming the step and the last
    finite loss (``TrainingError``; the CLI exits 2). ``skip``: the batch's update is dropped (every
    gradient set to None, so no optimizer moves anything) and counted as ``train/skipped_batches``;
    a run that skips ``max_skipped_in_a_row`` steps in a row, or more than ``max_skipped_share`` of
    its steps by its end, learnt nothing worth its exit 0: it fails with one line (its checkpoints
    kept). The count is reported at the end.

    ``check``: where the loss is read. ``host`` reads whether it is finite at every step: a host
    synchronisation, free on a CPU, a stall of the queue on a GPU. ``device`` decides on the device,
    as ``torch.amp``'s GradScaler does: the optimizer is handed ``found_inf`` (1 where the step is to
    be dropped) and skips its own update (torch's ``fused=True`` Adam, AdamW, SGD and Adagrad;
    ``lstm_pl.optim.TFAdam``), and the host reads the outcome every ``device_check_every`` steps,
    before each validation and at the end (a checkpoint reads the counts). Under ``stop`` every update from the
    first non-finite loss on is dropped, so the weights are those before it, and the run stops
    when the host reads it (at most ``device_check_every`` steps later; the steps between ran, their
    updates dropped). ``auto`` (default): ``device`` on an accelerator whose optimizers take
    ``found_inf`` (and no fp16 GradScaler, which sets it itself), else ``host``."""

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skipped_share: OpenUnitInterval = 0.5,
                 max_skipped_in_a_row: PositiveInt = 100, check: Literal["auto", "host", "device"] = "auto",
                 device_check_every: PositiveInt = 100):
        self.action, self.max_share, self.max_in_a_row = action, max_skipped_share, max_skipped_in_a_row
        self.check, self.device_check_every = check, device_check_every
        self.last_finite: tuple[int, torch.Tensor] | None = None
        self.skipped, self.skip_this_step, self.in_a_row = 0, False, 0
        self.on_device, self.read_at = False, -1
        self.flags: DeviceFlags | None = None

    def on_fit_start(self, trainer, pl_module):
        unable = [type(optimizer).__name__ for optimizer in trainer.optimizers if not takes_found_inf(optimizer)]
        if self.check == "device" and unable:
            raise ConfigError(f"non_finite.check: device needs optimizers that skip their own step on the device "
                              f"(torch's fused=True Adam, AdamW, SGD, Adagrad; lstm_pl.optim.TFAdam); "
                              f"{', '.join(unable)} does not (set fused: true, or non_finite.check: host)")
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None  # fp16: GradScaler sets found_inf itself
        if self.check == "device" and scaled:
            raise ConfigError(f"non_finite.check: device cannot run with trainer.precision {trainer.precision} (its "
                              f"GradScaler hands the optimizer found_inf itself); use non_finite.check: host or auto")
        self.on_device = self.check == "device" or (self.check == "auto" and pl_module.device.type != "cpu"
                                                    and not unable and not scaled)

    def on_before_backward(self, trainer, pl_module, loss):
        step = trainer.global_step + 1
        if self.on_device:
            loss = loss.detach().reshape(())  # a one-element loss of any shape
            if self.flags is None:
                self.flags = DeviceFlags(loss, self.skipped, self.in_a_row)
            self.flags.add_loss(step, loss)
            return
        if bool(torch.isfinite(loss)):
            self.last_finite = (step, loss.detach())
            return
        if self.action == "skip":
            self.skip_this_step = True
            return
        raise TrainingError(self.stopped_line(step, float(loss.detach())) + " the run stopped before that update. "
                            + self.remedy)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.on_device:
            if self.flags is not None:
                optimizer.found_inf = self.flags.end_step(trainer.global_step + 1, self.action == "stop", self.max_in_a_row)
            return
        if not self.skip_this_step:
            self.in_a_row = 0
            return
        for parameter in pl_module.parameters():
            parameter.grad = None
        self.skipped, self.skip_this_step, self.in_a_row = self.skipped + 1, False, self.in_a_row + 1
        pl_module.log("train/skipped_batches", float(self.skipped))
        self.check_in_a_row(trainer.global_step + 1)

    remedy = ("Lower the learning rate (optimizer.init_args.lr), clip gradients (trainer.gradient_clip_val) or set "
              "non_finite.action: skip")

    def stopped_line(self, step: int, loss: float) -> str:
        last = ("none before it" if self.last_finite is None else
                f"the last finite one {float(self.last_finite[1]):.6g} at step {self.last_finite[0]}")
        return f"trainer: the training loss is {loss} at step {step} ({last});"

    def check_in_a_row(self, step: int) -> None:
        if self.in_a_row >= self.max_in_a_row:
            raise TrainingError(f"non_finite.max_skipped_in_a_row: the last {self.in_a_row} steps (to step "
                                f"{step}) all had a non-finite loss and were skipped; the run "
                                f"stopped. Lower the learning rate (optimizer.init_args.lr) or clip gradients")

    def read_device(self, trainer) -> None:
        """Take what the device decided since the last reading (one host synchronisation) and act on
        it as ``host`` would have at the step it happened."""
        if self.flags is None:
            return
        reading = self.flags.read()
        if self.action == "stop":
            if reading.last_finite is not None:
                self.last_finite = reading.last_finite
            if reading.first_bad is not None:
                step, loss = reading.first_bad
                self.flags = None  # read once: the interrupted run's own checkpoint reads nothing more
                raise TrainingError(self.stopped_line(step, loss) + f" that update and every later one were dropped "
                                    f"on the device, and the run stopped at step {trainer.global_step} "
                                    f"(non_finite.check: device reads it every {self.device_check_every} steps). "
                                    + self.remedy)
            return
        if reading.skipped != self.skipped and trainer.loggers:
            for logger in trainer.loggers:
                logger.log_metrics({"train/skipped_batches": float(reading.skipped)}, step=max(trainer.global_step - 1, 0))
        self.skipped, self.in_a_row = reading.skipped, reading.in_a_row
        if reading.limit_reached_at is not None:
            self.in_a_row, self.flags = self.max_in_a_row, None
            self.check_in_a_row(reading.limit_reached_at)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # once per optimizer step (micro-batches share it), not before the first
        if self.on_device and step and step % self.device_check_every == 0 and step != self.read_at:
            self.read_at = step
            self.read_device(trainer)

    def on_validation_start(self, trainer, pl_module):
        if self.on_device and not trainer.sanity_checking:
            self.read_device(trainer)

    def on_train_end(self, trainer, pl_module):
        if self.on_device:
            self.read_device(trainer)
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
        if self.flags is not None:  # a checkpoint holds what the device has decided so far
            reading = self.flags.read()
            self.skipped, self.in_a_row = reading.skipped, reading.in_a_row
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.in_a_row = state["skipped"], state.get("in_a_row", 0)
        self.flags = None  # made again from these counts at the next step


def takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` skips its own update where ``optimizer.found_inf`` is 1, on the
    device (torch's fused optimizers, as GradScaler uses them; ``lstm_pl.optim.TFAdam``)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) or getattr(optimizer, "reads_found_inf", False))


class Reading(NamedTuple):
    """What ``DeviceFlags`` hold, read on the host."""
    first_bad: tuple[int, float] | None      # the first non-finite loss: (step, loss)
    last_finite: tuple[int, float] | None    # the last finite loss before it: (step, loss)
    skipped: int                             # steps whose update was dropped for a loss of their own
    in_a_row: int                            # of them, the run that ends at the last step
    limit_reached_at: int | None             # the step where that run first reached max_skipped_in_a_row


class DeviceFlags:
    """The non-finite guard's record on the device, kept without reading anything back: whether the
    current step's micro-batches met a non-finite loss, whether any step has, the first such step and
    loss, the last finite loss before it, the skipped steps and the current run of them. ``read``
    brings it to the host in one transfer."""

    def __init__(self, loss: torch.Tensor, skipped: int, in_a_row: int):
        integer = dict(dtype=torch.int64, device=loss.device)
        self.step_bad = torch.zeros((), dtype=torch.bool, device=loss.device)
        self.any_bad = torch.zeros_like(self.step_bad)
        self.first_bad_step, self.last_finite_step = torch.full((), -1, **integer), torch.full((), -1, **integer)
        self.first_bad_loss, self.last_finite_loss = torch.zeros_like(loss), torch.zeros_like(loss)
        self.skipped, self.in_a_row = torch.full((), skipped, **integer), torch.full((), in_a_row, **integer)
        self.limit_reached_at = torch.full((), -1, **integer)

    def add_loss(self, step: int, loss: torch.Tensor) -> None:
        """One micro-batch's loss, at optimizer step ``step`` (1-based)."""
        finite = torch.isfinite(loss)
        first = ~finite & ~self.any_bad
        before_any = finite & ~self.any_bad
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.first_bad_loss = torch.where(first, loss, self.first_bad_loss)
        self.last_finite_step = torch.where(before_any, step, self.last_finite_step)
        self.last_finite_loss = torch.where(before_any, loss, self.last_finite_loss)
        self.step_bad = self.step_bad | ~finite
        self.any_bad = self.any_bad | ~finite

    def end_step(self, step: int, sticky: bool, max_in_a_row: int) -> torch.Tensor:
        """``found_inf`` for step ``step``'s update (float, 1: drop it): its micro-batches met a
        non-finite loss, or (``sticky``) any step has; the counts move on."""
        found_inf = (self.any_bad if sticky else self.step_bad).float()
        if not sticky:  # skip: count; stop: the run ends at the reading, nothing is counted as skipped
            self.skipped = self.skipped + self.step_bad
            self.in_a_row = torch.where(self.step_bad, self.in_a_row + 1, 0)
            self.limit_reached_at = torch.where((self.in_a_row >= max_in_a_row) & (self.limit_reached_at < 0), step,
                                                self.limit_reached_at)
        self.step_bad = torch.zeros_like(self.step_bad)
        return found_inf

    def read(self) -> Reading:
        integers = torch.stack([self.first_bad_step, self.last_finite_step, self.skipped, self.in_a_row,
                                self.limit_reached_at]).tolist()  # the host synchronisation
        first_bad_step, last_finite_step, skipped, in_a_row, limit_reached_at = integers
        first_bad_loss, last_finite_loss = torch.stack([self.first_bad_loss, self.last_finite_loss]).tolist()
        return Reading(first_bad=(first_bad_step, first_bad_loss) if first_bad_step >= 0 else None,
                       last_finite=(last_finite_step, last_finite_loss) if last_finite_step >= 0 else None,
                       skipped=skipped, in_a_row=in_a_row,
                       limit_reached_at=limit_reached_at if limit_reached_at >= 0 else None)


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
