"""Averaged weights: the mean of the weights over the steps since a trigger, which validation, test,
generation and every checkpoint's ``state_dict`` use while training goes on with the raw weights.

AWD-LSTM's NT-ASGD (Merity, Keskar and Socher 2018, "Regularizing and Optimizing LSTM Language
Models", section 3; ``main.py`` of salesforce/awd-lstm-lm) trains with SGD and, once the
validation loss is worse than the best of all validations but the last ``n``, switches to ASGD with
no decay, which is SGD whose evaluation reads the average of the iterates since the switch:

    w̄_k = (1 / k) · Σ_{i=1..k} w_{t0 + i},  computed as  w̄_k = w̄_{k-1} + (w_{t0 + k} − w̄_{k-1}) / k

Stochastic weight averaging (Izmailov et al. 2018) is the same mean from a fixed epoch on, with a
constant learning rate.
"""

from __future__ import annotations

import logging
from typing import Optional

import pytorch_lightning as pl
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from pytorch_lightning.utilities import rank_zero_info

from .errors import ConfigError

log = logging.getLogger(__name__)


class WeightAveraging(pl.Callback):
    """The running mean of the weights after every optimizer step from a trigger on: ``non_monotone``
    (NT-ASGD: at a validation whose ``monitor`` value is worse than the best of all validations before
    the last ``non_monotone``; AWD-LSTM's default 5) or ``start_epoch`` (SWA: from that epoch's first
    step); neither (``configs/base.yaml``'s ``averaging:`` group): off.

    From the trigger on, the model holds the average from each validation's start to the next
    training step (so validation, the figures and a test after ``fit`` read it), and every
    checkpoint's ``state_dict`` is the average, so ``test --ckpt_path``, ``generate`` and
    ``load_from_checkpoint`` read it as they read any checkpoint. The raw weights, the average, its
    count and the validation history are this callback's checkpoint state: a resumed run goes on
    with the raw weights and the same average, as an uninterrupted one does."""

    def __init__(self, non_monotone: Optional[PositiveInt] = None, start_epoch: Optional[NonNegativeInt] = None,
                 monitor: str = "val/loss"):
        if non_monotone is not None and start_epoch is not None:
            raise ConfigError("averaging: set one of averaging.non_monotone (NT-ASGD's trigger) and "
                              "averaging.start_epoch (SWA's), not both")
        self.non_monotone, self.start_epoch, self.monitor = non_monotone, start_epoch, monitor
        self.history: list[float] = []       # the monitored value at each validation before averaging began
        self.average: dict[str, torch.Tensor] | None = None
        self.count = 0                       # steps in the average
        self.started_at: int | None = None   # the global step averaging began after
        self.raw: dict[str, torch.Tensor] | None = None  # the training weights while the model holds the average
        self.to_restore: dict[str, torch.Tensor] | None = None  # the training weights of a checkpoint resumed from
        self.averaged_step: int | None = None

    @property
    def averaging(self) -> bool:
        return self.average is not None

    def on_fit_start(self, trainer, pl_module):
        """A start epoch the run never reaches (``trainer.max_epochs`` shortened without it) ends the
        run on its raw weights: one warning, as for a cosine shorter than the run."""
        if self.start_epoch is not None and trainer.max_epochs not in (None, -1) and self.start_epoch >= trainer.max_epochs:
            log.warning("lstm_pl: averaging.start_epoch is %d, trainer.max_epochs %d: the run ends before averaging "
                        "starts (epochs count from 0), on its raw weights", self.start_epoch, trainer.max_epochs)

    # the average --------------------------------------------------------------------------------
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, why: str) -> None:
        self.average = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
        self.count, self.started_at, self.averaged_step = 1, trainer.global_step, trainer.global_step
        rank_zero_info(f"weight averaging: from step {trainer.global_step} (epoch {trainer.current_epoch}), {why}")

    def on_train_epoch_start(self, trainer, pl_module):
        self._train_on_raw(pl_module)
        if self.start_epoch is not None and not self.averaging and trainer.current_epoch >= self.start_epoch:
            self._start(trainer, pl_module, f"start_epoch {self.start_epoch}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._train_on_raw(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.averaging and trainer.global_step != self.averaged_step:  # an optimizer step was taken
            self.averaged_step, self.count = trainer.global_step, self.count + 1
            names = list(self.average)
            parameters = dict(pl_module.named_parameters())
            # w̄_k = w̄_{k-1} + (w_k - w̄_{k-1}) / k
            torch._foreach_lerp_([self.average[n] for n in names], [parameters[n].detach() for n in names],
                                 1.0 / self.count)

    # validation reads the average; NT-ASGD's trigger ---------------------------------------------
    def on_validation_start(self, trainer, pl_module):
        if self.averaging and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._evaluate_on_average(pl_module)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.averaging or self.non_monotone is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value, n = float(value), self.non_monotone
        if len(self.history) > n and value > min(self.history[:-n]):
            self._start(trainer, pl_module, f"{self.monitor} {value:.6g} worse than the best before the last {n} "
                                            f"validations ({min(self.history[:-n]):.6g})")
        else:
            self.history.append(value)

    def on_train_end(self, trainer, pl_module):
        """The run ends holding the average: a ``trainer.test`` after ``fit`` reads what checkpoints hold."""
        if self.averaging:
            self._evaluate_on_average(pl_module)

    def _evaluate_on_average(self, pl_module: pl.LightningModule) -> None:
        if self.raw is None:
            self.raw = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
            self._load(pl_module, self.average)

    def _train_on_raw(self, pl_module: pl.LightningModule) -> None:
        if self.raw is not None:
            self._load(pl_module, self.raw)
            self.raw = None

    @staticmethod
    def _load(pl_module: pl.LightningModule, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, parameter in pl_module.named_parameters():
                parameter.copy_(weights[name])

    # checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": list(self.history), "count": self.count, "started_at": self.started_at,
                "averaged_step": self.averaged_step}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """This callback's state gains the training weights and the average; the checkpoint's
        ``state_dict`` holds the average, under every name a tied weight has."""
        if not self.averaging:
            return
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None:
            raw = self.raw or {name: p.detach() for name, p in pl_module.named_parameters()}
            state["raw"] = {name: value.clone() for name, value in raw.items()}
            state["average"] = {name: value.clone() for name, value in self.average.items()}
        keys_of: dict[int, list[str]] = {}
        for key, value in pl_module.state_dict(keep_vars=True).items():
            keys_of.setdefault(id(value), []).append(key)
        for name, parameter in pl_module.named_parameters():
            for key in keys_of.get(id(parameter), ()):
                checkpoint["state_dict"][key] = self.average[name].clone()

    def load_state_dict(self, state: dict) -> None:
        self.history, self.count = list(state.get("history", [])), state.get("count", 0)
        self.started_at, self.averaged_step = state.get("started_at"), state.get("averaged_step")
        self.average, self.to_restore = state.get("average"), state.get("raw")

    def on_train_start(self, trainer, pl_module):
        """A resumed run trains on the raw weights its checkpoint kept (its ``state_dict`` is the average)."""
        restore, self.to_restore, self.raw = self.to_restore, None, None
        if self.averaging:
            self.average = {name: value.to(pl_module.device) for name, value in self.average.items()}
            if restore is not None:
                self._load(pl_module, restore)
