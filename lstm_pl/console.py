"""What a run reports. On the console (Lightning's notes that tell a user nothing are dropped by
``runtime.quiet``): where no progress bar draws (output not a terminal) one line per validation,
at most one every ``every_seconds``; a summary at the end (the metrics, the run folder, the
checkpoints, the figures, the TensorBoard command). In TensorBoard: the hyperparameters beside the
run's final metrics (its last ``val/*``, ``test/*``), for the HPARAMS tab."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from .callbacks import run_folder

def shown(path: str | Path) -> str:
    """``path`` relative to the working directory where it lies inside it, as a user would type it."""
    path = Path(os.path.abspath(path))  # not resolved: .venv/bin/python is a link to the base interpreter
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def command_prefix(program: str = "python") -> str:
    """How this interpreter's ``program`` is spelled for the user: ``.venv/bin/python`` where it is
    the checkout's virtual environment (as the README runs it), else ``python``."""
    here = Path(sys.executable).parent / program
    spelled = shown(here)
    return spelled if here.exists() and not Path(spelled).is_absolute() else program


def hp_metrics(metrics: dict, prefixes: tuple[str, ...]) -> dict[str, float]:
    """The tags of ``metrics`` under ``prefixes``, HPARAMS's metrics (each one's last value in the run)."""
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefixes)}


def value(metric) -> str:
    return f"{float(metric):.4g}" if isinstance(metric, (int, float, torch.Tensor)) else str(metric)


class Report(pl.Callback):
    """The run's progress and summary on standard output, and its HPARAMS metrics, from rank zero.

    ``every_seconds``: the least time between two progress lines (a task that validates every step,
    as sine does, would otherwise print hundreds); the first validation and the summary always print.

    Each checkpoint also carries what the run has cost up to it (``cost``), summed over the
    processes of a run resumed from checkpoints, for ``python -m lstm_pl.results`` to account a run
    it goes on with after a kill."""

    def __init__(self, every_seconds: float = 10.0):
        if not every_seconds >= 0:
            raise ValueError(f"report.every_seconds must be >= 0, got {every_seconds}")
        self.every_seconds = every_seconds
        self._start = self._last_line = None
        self._start_step = 0
        self._made = time.perf_counter()  # the CLI makes its callbacks at start-up
        self._earlier = {"cpu_seconds": 0.0, "wall_seconds": 0.0}  # the parts before this process (a resume)

    def cost(self) -> dict[str, float]:
        """CPU seconds (user + system of the whole process and its ended children, start-up and
        data included, as ``os.wait4`` counts a child process) and wall seconds (since the CLI made
        this callback, after the imports), this process's until now plus those of the processes a
        resumed run went on from (until their last checkpoint: the work after it was redone)."""
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return {"cpu_seconds": self._earlier["cpu_seconds"] + cpu,
                "wall_seconds": self._earlier["wall_seconds"] + time.perf_counter() - self._made}

    def state_dict(self) -> dict[str, float]:
        return self.cost()

    def load_state_dict(self, state: dict) -> None:
        self._earlier = {key: float(state.get(key, 0.0)) for key in self._earlier}

    def on_fit_start(self, trainer, pl_module):
        self._start, self._last_line = time.perf_counter(), None

    def on_train_start(self, trainer, pl_module):
        self._start_step = trainer.global_step  # a resumed run's steps are restored after on_fit_start

    def on_validation_end(self, trainer, pl_module):
        if (trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero
                or trainer.progress_bar_callback is not None or self._start is None):
            return
        now = time.perf_counter()
        if self._last_line is not None and now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        print(self.progress(trainer, now), flush=True)

    def progress(self, trainer, now: float) -> str:
        budget = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        metrics = trainer.callback_metrics
        shown_metrics = [k for k in ("train/loss", *sorted(k for k in metrics if k.startswith("val/"))) if k in metrics]
        rate = (trainer.global_step - self._start_step) / max(now - self._start, 1e-9)
        return "  ".join([f"step {trainer.global_step}{budget}", *(f"{k} {value(metrics[k])}" for k in shown_metrics),
                          f"{rate:.1f} steps/s"])

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        lines = [f"fit done: {trainer.global_step} steps ({trainer.global_step - self._start_step} this run) "
                 f"in {seconds:.0f} s, epoch {trainer.current_epoch}"]
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/loss"))}
        if metrics:
            lines.append("  last: " + "  ".join(f"{k} {value(v)}" for k, v in sorted(metrics.items())))
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
            lines.append(f"  best: {checkpoint.monitor} {value(checkpoint.best_model_score)}  {shown(checkpoint.best_model_path)}")
        if checkpoint is not None and getattr(checkpoint, "last_model_path", ""):
            lines.append(f"  last checkpoint: {shown(checkpoint.last_model_path)}")
        lines += self.files(trainer)
        print("\n".join(lines), flush=True)
        self.log_hyperparameters(trainer, pl_module, hp_metrics(metrics, ("val/",)))

    def teardown(self, trainer, pl_module, stage):
        if stage != "fit" and trainer.is_global_zero and not trainer.sanity_checking and trainer.loggers:
            checkpoint = [f"  checkpoint: {shown(trainer.ckpt_path)}"] if trainer.ckpt_path else []  # whose weights
            print("\n".join([f"{getattr(stage, 'value', stage)} done", *checkpoint, *self.files(trainer)]), flush=True)
            self.log_hyperparameters(trainer, pl_module, hp_metrics(trainer.callback_metrics, ("val/", "test/")))

    @staticmethod
    def log_hyperparameters(trainer, pl_module, metrics: dict[str, float]) -> None:
        """The model's and the data's settings and the optimizer's, with ``metrics``: TensorBoard's
        HPARAMS tab compares runs by them (Lightning logs none with ``default_hp_metric: false``)."""
        if not metrics:
            return
        settings = lambda hparams: {k: v for k, v in dict(hparams or {}).items() if not k.startswith("_")}  # not the CLI's
        params = {"model": settings(pl_module.hparams), "data": settings(getattr(trainer.datamodule, "hparams", None))}
        for optimizer in trainer.optimizers[:1]:
            params["optimizer"] = {"class": type(optimizer).__name__, **{k: v for k, v in optimizer.defaults.items()
                                                                         if isinstance(v, (int, float, str, bool))}}
        for logger in trainer.loggers:
            logger.log_hyperparams(params, metrics, step=trainer.global_step)

    @staticmethod
    def files(trainer) -> list[str]:
        """The run folder, its figures and the TensorBoard command (where a logger writes one)."""
        if not trainer.loggers:
            return []
        folder = run_folder(trainer)
        figures = sorted(p.name for p in folder.glob("*.png"))
        lines = [f"  run folder: {shown(folder)}"]
        if figures:
            lines.append(f"  figures: {', '.join(figures)}")
        save_dir = getattr(trainer.loggers[0], "save_dir", None) or trainer.loggers[0].root_dir
        lines.append(f"  TensorBoard: {command_prefix('tensorboard')} --logdir {shown(save_dir)}")
        return lines
