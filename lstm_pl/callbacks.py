"""The original's plots as Lightning callbacks: each figure goes to TensorBoard and, as a PNG,
into the run's log folder when fit ends."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402


def save_figure(trainer: pl.Trainer, figure: plt.Figure, name: str) -> Path:
    """Write ``figure`` as ``<log_dir>/<name>.png`` (via a temporary file, so a crash never leaves
    half a PNG) and add it to TensorBoard; returns the PNG's path."""
    folder = Path(trainer.log_dir or trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    partial = path.with_suffix(".png.partial")
    figure.savefig(partial, format="png", dpi=110, bbox_inches="tight")
    os.replace(partial, path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, figure, global_step=trainer.global_step)
    plt.close(figure)
    return path


@contextmanager
def evaluating(module: torch.nn.Module):
    """Eval mode without gradients for the block; the module's mode is restored after it."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


class LossCurves(pl.Callback):
    """The loss curves: the epoch mean of ``train_key`` and the value of ``val_key`` per epoch."""

    def __init__(self, train_key: str = "train/loss_epoch", val_key: str = "val/loss", log_scale: bool = True):
        self.train_key, self.val_key, self.log_scale = train_key, val_key, log_scale
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        if self.train_key in trainer.callback_metrics:
            self.train.append((trainer.current_epoch + 1, trainer.callback_metrics[self.train_key].item()))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and self.val_key in trainer.callback_metrics:
            self.val.append((trainer.current_epoch + 1, trainer.callback_metrics[self.val_key].item()))

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero or not (self.train or self.val):
            return
        figure, ax = plt.subplots(figsize=(7, 4))
        for points, label in ((self.train, self.train_key), (self.val, self.val_key)):
            if points:
                ax.plot(*zip(*points), label=label)
        ax.set(xlabel="epoch", ylabel="loss", yscale="log" if self.log_scale else "linear", title="Loss curves")
        ax.legend()
        save_figure(trainer, figure, "loss_curves")


class SineWaveform(pl.Callback):
    """The sine task's waveform: noisy and clean wave, one-step-ahead predictions, and the
    long-term (closed-loop) prediction from the first window to the end of the series.

    Logs ``val/closed_loop_mse`` (closed loop against the clean wave) every ``every_n_epochs``
    validations and at the end of fit.
    """

    def __init__(self, every_n_epochs: int = 50):
        self.every_n_epochs = every_n_epochs

    @staticmethod
    def closed_loop(trainer, pl_module) -> tuple[np.ndarray, float]:
        data = trainer.datamodule
        first = torch.tensor(data.series[: data.window, None], dtype=pl_module.dtype, device=pl_module.device)
        predicted = pl_module.net.closed_loop(first, steps=data.length - data.window).cpu().numpy()
        return predicted, float(np.mean((predicted - data.clean[data.window :]) ** 2))

    def on_validation_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs
        if trainer.sanity_checking or not (epoch % self.every_n_epochs == 0 or last):
            return
        _, mse = self.closed_loop(trainer, pl_module)
        pl_module.log("val/closed_loop_mse", mse)

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        data = trainer.datamodule
        with evaluating(pl_module):
            x = torch.tensor(data.x, dtype=pl_module.dtype, device=pl_module.device)
            one_step = pl_module(x)[:, 0].cpu().numpy()
            long_term, mse = self.closed_loop(trainer, pl_module)
        t = np.arange(data.length)
        figure, ax = plt.subplots(figsize=(9, 4))
        ax.plot(t, data.series, color="0.6", lw=1, label="noisy wave (data)")
        ax.plot(t, data.clean, "k--", lw=1, label="clean wave")
        ax.plot(t[data.window :], one_step, color="tab:blue", lw=1.2, label="one-step prediction")
        ax.plot(t[data.window :], long_term, color="tab:red", lw=1.5, label=f"long-term prediction (MSE {mse:.4f})")
        ax.axvline(data.window - 0.5, color="0.8", lw=0.8)
        ax.set(xlabel="t", ylabel="f(t)", title="Sine wave: one-step and closed-loop predictions")
        ax.legend(loc="lower left", fontsize=8)
        save_figure(trainer, figure, "waveform")


class PredictionScatter(pl.Callback):
    """Predictions against targets on the validation split (the adding task's figure)."""

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        data = trainer.datamodule
        with evaluating(pl_module):
            predictions = torch.cat([pl_module(x.to(pl_module.device)) for x, _ in data.val_dataloader()]).cpu()
        targets = data.val_set.tensors[1]
        figure, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(targets[:, 0], predictions[:, 0], s=4, alpha=0.5)
        ax.plot([0, 2], [0, 2], "k--", lw=1)
        mse = float(torch.mean((predictions - targets) ** 2))
        ax.set(xlabel="target", ylabel="prediction", title=f"Validation predictions (MSE {mse:.4f})")
        save_figure(trainer, figure, "predictions")
