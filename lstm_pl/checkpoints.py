"""Checkpoints a run can trust: written atomically, ``last.ckpt`` always the last state, read
with ``weights_only=True``, and a bad ``--ckpt_path`` said in one line before anything starts."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from .callbacks import weights_finite
from .errors import ConfigError
from .files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through ``files.atomic_write``: a temporary file in the checkpoint's own folder,
    renamed into place, so a full disk or a kill leaves the previous complete checkpoint, never a
    partial one (Lightning's own save stages the file where fsspec chooses, which may be another
    filesystem, and then the final move is a copy)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as partial:
            torch.save(checkpoint, partial)


class Checkpoints(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last state: rewritten after every validation,
    every ``every_n_train_steps`` steps if set, at the end of training and when the run is
    interrupted (SIGTERM, SIGINT, a stop on a non-finite loss), not only when ``monitor``
    improves (Lightning's own rule: it rewrites ``last`` only in a step that saved a top-k
    checkpoint). The best-by-``monitor`` checkpoints are as Lightning keeps them."""

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for this step, unless it is saved already or the weights are not
        finite (a non-finite gradient never replaces the last good state)."""
        if (self.save_last and not trainer.sanity_checking and self._last_global_step_saved != trainer.global_step
                and weights_finite(trainer.lightning_module)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0:
            self._save_last_now(trainer)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # A run stopped inside an epoch (max_steps) is saved here, while its loops still count
        # that epoch as unfinished, so that a resumed run goes on inside it (at on_train_end the
        # epoch is already recorded as complete, and a resumed run would start the next one).
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.state.fn == "fit":
            self._save_last_now(trainer)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (only tensors and plain
    Python values: what lstm_pl saves), or ``ConfigError`` naming ``ckpt_path`` and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path: no such file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, not a checkpoint, a pickle outside the allow-list
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"ckpt_path: {path} is not a readable checkpoint ({reason[:160]}); "
                          f"use an intact .ckpt written by lstm_pl") from None


def importable(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def check_checkpoint_fits(path: str | Path, model_class_path: str) -> None:
    """A checkpoint of another task (a class neither this config's model nor related to it) cannot
    be resumed or tested with this config: say so in one line."""
    saved = read_checkpoint(path).get("hyper_parameters", {}).get("_class_path")
    if saved is None or saved == model_class_path:
        return
    ours, theirs = importable(model_class_path), importable(saved)
    if ours is None or theirs is None or not (issubclass(ours, theirs) or issubclass(theirs, ours)):
        raise ConfigError(f"ckpt_path: {path} is a {saved} checkpoint; this config's model is {model_class_path}")
