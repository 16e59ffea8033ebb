"""Checkpoints a run can trust: written atomically, ``last.ckpt`` always the last state, read
with ``weights_only=True``, and a bad ``--ckpt_path`` said in one line before anything starts."""

from __future__ import annotations

import importlib
import logging
import math
import time
import zipfile
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
import torch
from jsonargparse.typing import NonNegativeFloat
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from .errors import ConfigError, first_line
from .files import atomic_write, remove_stale_partials
from .models import flat, weights_finite
from .tasks import DATA_LINKS, PREDATES_MATCH_WEIGHT, predates_match_weight

log = logging.getLogger(__name__)


# Lightning's private names this module uses, all here, read from pytorch-lightning 2.6.6 (its
# ModelCheckpoint keeps no public way to write ``last.ckpt`` for a step, and its epoch loop none to
# ask whether an epoch has run to its end). tests/test_resume.py checks that each still exists.
LIGHTNING_PRIVATE = {
    "pytorch_lightning.callbacks.ModelCheckpoint": (
        "_save_last_checkpoint", "_monitor_candidates", "_every_n_train_steps", "_save_checkpoint",
        "_remove_checkpoint"),
    "pytorch_lightning.Trainer": ("_checkpoint_connector",),
    "pytorch_lightning.trainer.connectors.checkpoint_connector._CheckpointConnector": ("dump_checkpoint",),
    "pytorch_lightning.loops.training_epoch_loop._TrainingEpochLoop": ("_num_ready_batches_reached",),
}


def epoch_ran_to_its_end(trainer: pl.Trainer) -> bool:
    """Whether the current training epoch has drawn all its batches (Lightning's private check)."""
    return trainer.fit_loop.epoch_loop._num_ready_batches_reached()


def snapshot(value: Any) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples copied (detached): a checkpoint
    dump refers to the live weights and optimizer state. A state dict keeps its ``_metadata``."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        copied = type(value)((key, snapshot(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):
            copied._metadata = value._metadata
        return copied
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(snapshot(item) for item in value)
    return value


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through ``files.atomic_write``: a temporary file in the checkpoint's own folder,
    renamed into place, so a full disk or a kill leaves the previous complete checkpoint, never a
    partial one (Lightning's own save stages the file where fsspec chooses, which may be another
    filesystem, and then the final move is a copy)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as partial:
            torch.save(checkpoint, partial)


class Checkpoints(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last state: written at the end of training,
    when the run is interrupted (SIGTERM, SIGINT, a stop on a non-finite loss), every
    ``every_n_train_steps`` steps if set, and after a validation once ``last_every_seconds`` have
    passed since it was last written, the first validation included (Lightning's own rule writes it only in a step that saved a
    top-k checkpoint, so it can lag far behind; a write after every validation would cost more than
    the training itself where validation runs every step, as sine's does). A kill (SIGKILL, power)
    loses at most the steps since that write.

    The best-by-``monitor`` checkpoints are chosen as Lightning chooses them, and each is taken (its
    state copied in memory) at the validation that found it, but written with the next write of
    ``last.ckpt`` (before it); the best checkpoints it replaces are deleted only after a ``last.ckpt``
    naming its successor is written (at a run's end whose weights are not finite, none is: they
    stay). So every ``last.ckpt`` names best checkpoints that are on disk, a kill leaves the previous best in place,
    and a run that validates every step (sine: 119 new bests in 500 steps) pays for one dump, not a
    file write and a deletion, per new best. ``last_every_seconds: 0`` (or ``save_last: false``)
    writes them at once, as Lightning does.

    A resumed run also takes the epoch-end scheduler step of the epoch it resumed in, which
    Lightning skips in a restarted epoch (it has no metrics for a plateau scheduler): with the
    validation metrics of the resumed part, or those the checkpoint saved where it was taken
    after its epoch's last validation."""

    def __init__(self, *args, last_every_seconds: NonNegativeFloat = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_every_seconds = last_every_seconds
        self.saved_metrics: dict[str, float] = {}
        self.last_written_at, self.last_written_step = -math.inf, None
        self.held: dict[str, dict] = {}  # best checkpoints taken, not yet written: path -> checkpoint
        self.doomed: list[str] = []  # replaced best checkpoints, deleted once a last.ckpt naming their successors is written

    @property
    def holding(self) -> bool:
        """Whether new best checkpoints wait for the next write of ``last.ckpt``."""
        return bool(self.save_last) and self.last_every_seconds > 0

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """Lightning's write of one checkpoint; a best one (``best_k_models`` names it before the
        write) is taken now and held (``holding``). Its tensors are copied: the dump refers to the
        live weights and optimizer state."""
        if not (self.holding and filepath in self.best_k_models):
            return super()._save_checkpoint(trainer, filepath)
        self.held[filepath] = snapshot(trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only))
        if filepath in self.doomed:  # a name used again: the new checkpoint replaces the old file
            self.doomed.remove(filepath)
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """A held checkpoint replaced before it was written is dropped; a written one is deleted
        once a ``last.ckpt`` naming its successor is written (``_delete_doomed``)."""
        if self.held.pop(filepath, None) is None:
            if self.holding:
                self.doomed.append(filepath)
            else:
                super()._remove_checkpoint(trainer, filepath)

    def _write_held(self, trainer: pl.Trainer) -> None:
        """Write the held best checkpoints (the files they replace stay until a ``last.ckpt`` that
        no longer names them is written: ``_delete_doomed``)."""
        if not self.held:
            return
        for filepath, checkpoint in list(self.held.items()):
            trainer.strategy.save_checkpoint(checkpoint, filepath)
            del self.held[filepath]
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _delete_doomed(self, trainer: pl.Trainer) -> None:
        """Delete the replaced best checkpoints, once a written ``last.ckpt`` names their successors."""
        while self.doomed:
            super()._remove_checkpoint(trainer, self.doomed.pop(0))

    def file_exists(self, filepath, trainer: pl.Trainer) -> bool:
        """A held checkpoint's name is taken, as a written one's is (Lightning's version counter asks)."""
        return str(filepath) in self.held or super().file_exists(filepath, trainer)

    @property
    def state_key(self) -> str:
        """Lightning's key for this callback's state in a checkpoint, made once (Lightning formats
        it anew at every hook call of every step, from settings that do not change)."""
        if "_state_key" not in self.__dict__:
            self.__dict__["_state_key"] = super().state_key
        return self.__dict__["_state_key"]

    def setup(self, trainer, pl_module, stage):
        """Also clear what interrupted writes left in the run folder (``files.remove_stale_partials``)."""
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            for folder in (Path(self.dirpath), Path(self.dirpath).parent):
                remove_stale_partials(folder)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> dict | None:
        checkpoint["callback_metrics"] = {name: float(value) for name, value in trainer.callback_metrics.items()
                                          if isinstance(value, (int, float)) or value.numel() == 1}
        return super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_metrics = checkpoint.get("callback_metrics", {})
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_train_epoch_end(self, trainer, pl_module):
        # A run stopped inside an epoch (max_steps) is saved here, while its loops still count
        # that epoch as unfinished, so that a resumed run goes on inside it (at on_train_end the
        # epoch is already recorded as complete, and a resumed run would start the next one).
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)
        # Lightning's FitLoop.on_advance_end steps the epoch schedulers only if "not restarting";
        # this is its complement, before that check, in the same hook sequence.
        if trainer.fit_loop.restarting and epoch_ran_to_its_end(trainer):
            for name, value in self.saved_metrics.items():
                trainer.callback_metrics.setdefault(name, torch.tensor(value))
            trainer.fit_loop.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)

    def _save_last_now(self, trainer: pl.Trainer, forced: bool = True) -> None:
        """Write ``last.ckpt`` for this step (unless ``forced`` is False and it was written less than
        ``last_every_seconds`` ago), unless it is written already, no step has run (a run that fails
        while it is set up leaves nothing) or the weights are not finite (a non-finite gradient never
        replaces the last good state). What is not written costs nothing: the due check comes first."""
        if (self.save_last and self.dirpath and trainer.global_step > 0 and not trainer.sanity_checking
                and self.last_written_step != trainer.global_step and self._last_due(trainer, forced)
                and weights_finite(trainer.lightning_module)):
            self._write_last(trainer, self._monitor_candidates(trainer))

    def _monitor_candidates(self, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
        """Lightning's (``ModelCheckpoint._monitor_candidates``): the logged metrics, copied, with the
        epoch and step as int tensors; the tensors copied one by one instead of by ``deepcopy``
        (a tenth of a validation's cost on sine)."""
        candidates = {name: snapshot(value) for name, value in trainer.callback_metrics.items()}
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        candidates["step"] = step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def _last_due(self, trainer: pl.Trainer, forced: bool) -> bool:
        """Whether ``last.ckpt`` is to be written now. The clock is rank zero's: every process decides alike."""
        return forced or trainer.strategy.broadcast(time.monotonic() - self.last_written_at >= self.last_every_seconds)

    def _write_last(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        """The held best checkpoints, then Lightning's own write of ``last.ckpt``, and when it was made."""
        self._write_held(trainer)
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._delete_doomed(trainer)
        self.last_written_at, self.last_written_step = time.monotonic(), trainer.global_step

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        """Where Lightning's own saves write ``last.ckpt`` (after a top-k checkpoint): at most every
        ``last_every_seconds``, like every other unforced write."""
        if self.last_written_step != trainer.global_step and self._last_due(trainer, forced=False):
            self._write_last(trainer, monitor_candidates)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0:
            self._save_last_now(trainer)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        # The run's last validation always writes: the state a resumed run continues from is then
        # the one taken here, as for every other validation, not the one at the epoch's end.
        # So does a validation once a SIGTERM has come: the run stops after it, and a checkpoint taken here
        # resumes as the uninterrupted run (one taken after the step's end would log every later
        # validation one step late: Lightning counts the logging step again on resuming a validated step).
        last = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step or trainer.received_sigterm
        self._save_last_now(trainer, forced=last)

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        self._save_last_now(trainer)
        self._write_held(trainer)  # also where last.ckpt was written at this step already, or not at all

    def on_exception(self, trainer, pl_module, exception):
        if trainer.state.fn == "fit":
            self._save_last_now(trainer)
            self._write_held(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder moved or copied since its checkpoint was saved still resumes as itself:
        the saved paths are taken relative to the folder they were saved in (Lightning would drop
        them, and write ``last-v1.ckpt`` beside the ``last.ckpt`` it resumed from)."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and saved != self.dirpath:
            moved = lambda path: str(Path(self.dirpath) / Path(path).relative_to(saved)) if path else path
            try:
                state_dict = {**state_dict, "dirpath": self.dirpath,
                              **{key: moved(state_dict.get(key)) for key in ("best_model_path", "kth_best_model_path",
                                                                             "last_model_path")},
                              "best_k_models": {moved(path): score for path, score in
                                                state_dict.get("best_k_models", {}).items()}}
            except ValueError:  # saved outside its own dirpath: leave it to Lightning
                pass
        super().load_state_dict(state_dict)


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (only tensors and plain
    Python values: what lstm_pl saves), or ``ConfigError`` naming ``key`` (the setting that gave
    the path) and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {path}")
    damaged = damaged_entry(path)
    if damaged:
        raise ConfigError(f"{key}: {path} is damaged ({damaged} fails its CRC-32: bytes changed since it was "
                          f"written); use an intact .ckpt written by lstm_pl")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, not a checkpoint, a pickle outside the allow-list
        raise ConfigError(f"{key}: {path} is not a readable checkpoint ({first_line(error)}); "
                          f"use an intact .ckpt written by lstm_pl") from None


def damaged_entry(path: Path) -> str | None:
    """The first entry of a checkpoint (a zip archive, as ``torch.save`` writes it) whose bytes fail the
    CRC-32 the archive recorded, or None. ``torch.load`` does not check them: a flipped bit in the
    weights loads, and trains into NaN. Not a zip archive: None (``torch.load`` says what it is)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def importable(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


LINKED = set(DATA_LINKS.values())  # model settings the data decides (tasks.DATA_LINKS): not compared on a resume


def check_checkpoint_fits(path: str | Path, config, resuming: bool) -> None:
    """A checkpoint fits only the task it was trained for: another model or data class is one line.
    A resumed fit (``resuming``) must also have the network it was trained with: another value of
    any model setting (``model.init_args.*``) is one line naming each difference, before anything
    is written (Lightning would silently take the checkpoint's settings over the config's; for
    test, validate and predict it does so on purpose: a checkpoint is evaluated as it was trained)."""
    checkpoint = read_checkpoint(path)
    if resuming and predates_match_weight(checkpoint):
        raise ConfigError(PREDATES_MATCH_WEIGHT.format(path=path))
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    saved = hparams.pop("_class_path", None)
    ours_path = config.model.class_path
    if saved is not None and saved != ours_path:
        ours, theirs = importable(ours_path), importable(saved)
        if ours is None or theirs is None or not (issubclass(ours, theirs) or issubclass(theirs, ours)):
            raise ConfigError(f"ckpt_path: {path} is a {saved} checkpoint; this config's model is {ours_path}")
    data_class = config.data.class_path.rpartition(".")[2]
    saved_data = [key for key in checkpoint if key.endswith("DataModule")]
    if saved_data and data_class not in saved_data:
        raise ConfigError(f"ckpt_path: {path} was trained on {saved_data[0]}; this config's data is {data_class}")
    init_args = config.model.get("init_args")
    ours = flat(init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args or {}))
    differing = [f"model.init_args.{key} is {ours[key]!r} here, {value!r} in the checkpoint"
                 for key, value in sorted(flat({k: v for k, v in hparams.items() if not k.startswith("_")}).items())
                 if key in ours and key not in LINKED and ours[key] != value]
    if differing and not resuming:  # evaluated as trained: say which settings given here are not used
        log.warning("lstm_pl: %s is evaluated with the settings it was trained with, not these: %s", path,
                    "; ".join(differing))
    elif differing:
        raise ConfigError(f"ckpt_path: {path} was trained with other model settings: {'; '.join(differing)}; "
                          f"resume with the settings it was trained with (its run folder's config.yaml)")
