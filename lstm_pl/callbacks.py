"""The original's plots (and the image classifier's), the run's tokenizer file and the
TensorBoard logger, as Lightning callbacks. Each figure goes to TensorBoard and, as a PNG, into
the run's log folder when fit ends or is interrupted (rank 0 only, never from non-finite weights)."""

from __future__ import annotations

import abc
import io
import math
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from jsonargparse.typing import PositiveInt
from pytorch_lightning.utilities import rank_zero_only

from .errors import ConfigError
from .files import atomic_write
from .models import closed_loop, flat, weights_finite
from .scalars import StepRecorder
from .tasks import Task


class StepLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the ``epoch`` scalar Lightning adds to every write
    (the step is every chart's axis; the language model's epochs are in ``val/*``), and with
    ``LearningRateMonitor``'s ``lr-<optimizer>`` written as ``train/lr-<optimizer>``: every tag in
    its split's card group, so that a run opens on its training curves, not an epoch or lr card."""

    SAVE_EVERY_SECONDS = 10.0
    saved_at = -math.inf

    def log_metrics(self, metrics, step=None):
        super().log_metrics({f"train/{k}" if k.startswith("lr-") else k: v for k, v in metrics.items() if k != "epoch"}, step)

    @rank_zero_only
    def save(self) -> None:
        """Lightning's save (the event file flushed, ``hparams.yaml`` written once), at most every
        ``SAVE_EVERY_SECONDS``: Lightning calls it after every validation's metrics, and on a run
        that validates every step the flush and its file-system checks cost more than the
        validation. The writer flushes on its own too, and ``finalize`` (the run's end, also a
        failed one) always saves."""
        now = time.monotonic()
        if now - self.saved_at >= self.SAVE_EVERY_SECONDS:
            super().save()
            self.saved_at = now

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.saved_at = -math.inf
        super().finalize(status)

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None, step=None):
        """Lightning's, except that ``metrics`` names tags the run has written already (``val/loss``,
        ``test/loss``...): HPARAMS reads each one's last value from the run, so they are registered,
        not written again (Lightning would write a copy at step 0: a stray point, and an ``hp`` card
        group the dashboard would open on)."""
        super().log_hyperparams(params)  # hparams.yaml; no summary (default_hp_metric: false)
        if metrics:
            from torch.utils.tensorboard.summary import hparams as hparams_summary  # as Lightning does: not at import

            values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat(params, "/").items()}
            writer = self.experiment._get_file_writer()  # as Lightning's own: reopened after a close (a later stage)
            for summary in hparams_summary(values, dict.fromkeys(metrics, 0.0)):
                writer.add_summary(summary, step)


def run_folder(trainer: pl.Trainer) -> Path:
    """Where a run's files go: the logger's version folder (``runs/<name>/version_<n>``). Read from
    the logger itself: ``trainer.log_dir`` is a collective call under DDP, and only rank 0 asks."""
    log_dir = trainer.loggers[0].log_dir if trainer.loggers else None
    return Path(log_dir or trainer.default_root_dir)


def save_figure(trainer: pl.Trainer, figure: Figure, name: str, tag: str) -> Path:
    """Write ``figure`` as ``<run folder>/<name>.png`` (atomically) and add the same PNG to
    TensorBoard as ``tag``: ``<split>/<what>``, beside the scalars of the split it shows (TensorBoard's
    dashboard groups cards by the part before the slash, scalars first: a run opens on its loss
    curves). Drawn once: ``add_figure`` would draw it again and encode another PNG."""
    path = run_folder(trainer) / f"{name}.png"
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path) as partial:
        partial.write_bytes(png.getvalue())
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            add_png(logger, tag, png.getvalue(), trainer.global_step)
    return path


def add_png(logger: TensorBoardLogger, tag: str, png: bytes, step: int) -> None:
    """An encoded PNG as TensorBoard's image summary (what ``add_image`` writes after encoding an
    array): width, height and colour type from the PNG's header (IHDR: bytes 16-25)."""
    from tensorboard.compat.proto.summary_pb2 import Summary  # as the writer does: not at import

    width, height = struct.unpack(">II", png[16:24])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[png[25]]  # grey, RGB, grey + alpha, RGBA
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    logger.experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


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


def outputs_on(pl_module: pl.LightningModule, loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The module's outputs on every batch of ``loader`` in eval mode: (inputs, targets, outputs),
    each concatenated over the batches, on the CPU."""
    inputs, targets, outputs = [], [], []
    with evaluating(pl_module):
        for x, y in loader:
            outputs.append(pl_module(x.to(pl_module.device)).cpu())
            inputs.append(x)
            targets.append(y)
    return torch.cat(inputs), torch.cat(targets), torch.cat(outputs)


class LearningRates(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` (``train/lr-<optimizer>`` through ``StepLogger``), which
    does nothing in a run without a logger (``--trainer.logger=false``) instead of stopping it."""

    def on_train_start(self, trainer, *args, **kwargs):
        self.active = bool(trainer.loggers)
        if self.active:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs):
        if self.active:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs):
        if self.active:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class FigureCallback(pl.Callback, abc.ABC):
    """A figure drawn by ``draw`` when fit ends, and when it is interrupted (SIGTERM, SIGINT, a
    stop on a non-finite loss) from weights that are still finite, so a stopped run shows what it
    reached; none for a run stopped before its first step (a setting refused at set-up): it has
    nothing to show, and its run folder stays empty."""

    @abc.abstractmethod
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw the figure and save it (``save_figure``)."""

    def on_fit_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.draw(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.is_global_zero and trainer.state.fn == "fit" and trainer.global_step > 0 and weights_finite(pl_module):
            self.draw(trainer, pl_module)


class LossCurves(StepRecorder, FigureCallback):
    """The loss curves against the optimizer step: the training loss every ``log_every_n_steps``
    steps (kept as tensors: no host sync in the training loop; taken into the curve every
    ``flush_every`` of them and before a checkpoint) and ``val_key`` at every validation.

    The training loss is the one the step computed, before its update; with ``after_update`` it is
    the loss of the same batch re-evaluated after the update, as the original recorded it (one
    more forward pass per recorded step; logged as ``train/loss_after_update``; a ``tasks.Task``
    whose ``batch_loss`` is ``recomputable`` only). ``figure=False`` records the curves without drawing
    them (the parity harness compares them; a figure costs half a second)."""

    def __init__(self, val_key: str = "val/loss", log_scale: bool = True, after_update: bool = False,
                 figure: bool = True, flush_every: PositiveInt = 100):
        # Written as train/loss_after_update; the loss before the update is scalars.TrainLoss's train/loss.
        super().__init__("train/loss_after_update" if after_update else None, flush_every)
        self.val_key, self.log_scale, self.after_update, self.figure = val_key, log_scale, after_update, figure
        self.train: list[tuple[int, torch.Tensor]] = []
        self.val: list[tuple[int, torch.Tensor]] = []
        self.packed: dict[str, tuple[int, torch.Tensor, torch.Tensor]] = {}  # curve -> (points packed, steps, values)

    def setup(self, trainer, pl_module, stage):
        if self.after_update and not (isinstance(pl_module, Task) and pl_module.recomputable):
            raise ConfigError(f"trainer.callbacks: LossCurves.after_update re-evaluates a batch after its update, and "
                              f"{type(pl_module).__name__}'s loss cannot be computed again (it is not a recomputable Task)")

    def value(self, trainer, pl_module, outputs, batch):
        if not self.after_update:
            return outputs["loss"]
        with torch.no_grad():
            return pl_module.batch_loss(batch)

    def taken(self, trainer, points):
        """The flushed points into the curve (the process-mean under DDP: the whole batch's, to float
        rounding, where the shares are equal), at the step after their update."""
        super().taken(trainer, points)
        self.train += [(step + 1, value) for step, value in points]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        """The held points too (Lightning takes ``state_dict`` before this hook)."""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        checkpoint["callbacks"][self.state_key] = self.state_dict()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and self.val_key in trainer.callback_metrics:
            self.val.append((trainer.global_step, trainer.callback_metrics[self.val_key].detach()))

    def state_dict(self) -> dict:
        """The curves so far, so that a resumed run's figure covers the whole run: a tensor of steps
        and one of values each (a checkpoint's size and time do not grow with a list of objects)."""
        return {"train": self._packed("train"), "val": self._packed("val")}

    def _packed(self, curve: str) -> dict[str, torch.Tensor]:
        """``curve``'s points as two tensors, packed incrementally: only the points added since the
        last checkpoint are converted (sine saves a checkpoint at each of its ~120 new bests)."""
        points = getattr(self, curve)
        count, steps, values = self.packed.get(curve, (0, torch.zeros(0, dtype=torch.long), torch.zeros(0)))
        if count < len(points):
            new = points[count:]
            steps = torch.cat([steps, torch.tensor([step for step, _ in new], dtype=torch.long)])
            values = torch.cat([values, torch.stack([value.float().cpu() for _, value in new])])
            self.packed[curve] = (len(points), steps, values)
        return {"steps": steps, "values": values}

    def load_state_dict(self, state: dict) -> None:
        as_points = lambda saved: (list(zip(saved["steps"].tolist(), saved["values"].unbind()))
                                   if isinstance(saved, dict) else [(step, torch.tensor(v)) for step, v in saved])
        self.train, self.val = as_points(state["train"]), as_points(state["val"])
        self.packed = {}

    def draw(self, trainer, pl_module):
        if not self.figure or not (self.train or self.val):
            return
        figure = Figure(figsize=(7, 4))
        ax = figure.subplots()
        train_label = "train/loss_after_update" if self.after_update else "train/loss"
        for points, label in ((self.train, train_label), (self.val, self.val_key)):
            if points:
                steps, values = zip(*points)
                ax.plot(steps, torch.stack(values).float().cpu().numpy(), label=label)
        ax.set(xlabel="step", ylabel="loss", yscale="log" if self.log_scale else "linear", title="Loss curves")
        ax.legend()
        save_figure(trainer, figure, "loss_curves", "train/loss_curves")


class SineWaveform(FigureCallback):
    """The sine task's waveform: noisy and clean wave, one-step-ahead predictions, and the
    long-term (closed-loop) prediction from the first window to the end of the series.

    Logs ``val/closed_loop_mse`` (closed loop against the clean wave) at the validations of every
    ``every_n_steps``-th step and of the last step. Reads the data's ``waveform``.
    """

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps

    @staticmethod
    def long_term_prediction(trainer, pl_module) -> tuple[np.ndarray, float]:
        wave = trainer.datamodule.waveform
        first = torch.tensor(wave.noisy[: wave.window, None], dtype=pl_module.dtype, device=pl_module.device)
        predicted = closed_loop(pl_module, first, steps=len(wave.noisy) - wave.window).cpu().numpy()
        return predicted, float(np.mean((predicted - wave.clean[wave.window :]) ** 2))

    def on_validation_epoch_end(self, trainer, pl_module):
        step = trainer.global_step
        if trainer.sanity_checking or not (step % self.every_n_steps == 0 or step == trainer.max_steps):
            return
        _, mse = self.long_term_prediction(trainer, pl_module)
        pl_module.log("val/closed_loop_mse", mse, sync_dist=True)  # the same on every process

    def draw(self, trainer, pl_module):
        wave = trainer.datamodule.waveform
        windows = np.lib.stride_tricks.sliding_window_view(wave.noisy[:-1], wave.window)[..., None]
        with evaluating(pl_module):
            x = torch.tensor(windows, dtype=pl_module.dtype, device=pl_module.device)
            one_step = pl_module(x)[:, 0].cpu().numpy()
            long_term, mse = self.long_term_prediction(trainer, pl_module)
        t = np.arange(len(wave.noisy))
        figure = Figure(figsize=(9, 4))
        ax = figure.subplots()
        ax.plot(t, wave.noisy, color="0.6", lw=1, label="noisy wave (data)")
        ax.plot(t, wave.clean, "k--", lw=1, label="clean wave")
        ax.plot(t[wave.window :], one_step, color="tab:blue", lw=1.2, label="one-step prediction")
        ax.plot(t[wave.window :], long_term, color="tab:red", lw=1.5, label=f"long-term prediction (MSE {mse:.4f})")
        ax.axvline(wave.window - 0.5, color="0.8", lw=0.8)
        ax.set(xlabel="t", ylabel="f(t)", title="Sine wave: one-step and closed-loop predictions")
        ax.legend(loc="lower left", fontsize=8)
        save_figure(trainer, figure, "waveform", "val/waveform")


class PredictionScatter(FigureCallback):
    """Predictions against targets on the validation split (the adding task's figure)."""

    def draw(self, trainer, pl_module):
        _, targets, predictions = outputs_on(pl_module, trainer.datamodule.val_dataloader())
        figure = Figure(figsize=(5, 5))
        ax = figure.subplots()
        ax.scatter(targets[:, 0], predictions[:, 0], s=4, alpha=0.5)
        ax.plot([0, 2], [0, 2], "k--", lw=1)
        mse = float(torch.mean((predictions - targets) ** 2))
        ax.set(xlabel="target", ylabel="prediction", title=f"Validation predictions (MSE {mse:.4f})")
        save_figure(trainer, figure, "predictions", "val/predictions")


class ClassificationFigures(FigureCallback):
    """The classifier's figures: the confusion matrix (rows: true class, columns: predicted) and
    a grid of up to ``max_images`` misclassified images, each titled true -> predicted; on the
    validation split when fit ends (``confusion_matrix.png``, ``misclassified.png``) and on the
    test set when test ends (``..._test.png``). Reads the data's ``image_shape``."""

    def __init__(self, max_images: int = 32):
        self.max_images = max_images

    def draw(self, trainer, pl_module, stage: str = "val"):
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        data = trainer.datamodule
        loader = data.val_dataloader() if stage == "val" else data.test_dataloader()
        inputs, targets, logits = outputs_on(pl_module, loader)
        predictions = logits.argmax(dim=-1)
        classes = data.num_classes
        matrix = multiclass_confusion_matrix(predictions, targets, classes).numpy()
        suffix = "" if stage == "val" else "_test"
        misclassified = torch.nonzero(predictions != targets).flatten()
        accuracy = 1 - len(misclassified) / len(targets)

        figure = Figure(figsize=(5.5, 5))
        ax = figure.subplots()
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > matrix.max() / 2 else "black")
        ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true",
               title=f"Confusion matrix, {stage} ({len(targets)} images, accuracy {accuracy:.2%})")
        save_figure(trainer, figure, f"confusion_matrix{suffix}", f"{stage}/confusion_matrix")

        wrong = misclassified[: self.max_images]
        columns = 8
        rows = max(1, -(-len(wrong) // columns))
        figure = Figure(figsize=(columns * 1.1, rows * 1.25 + 0.4))
        for k, index in enumerate(wrong.tolist()):
            ax = figure.add_subplot(rows, columns, k + 1)
            ax.imshow(inputs[index].reshape(data.image_shape).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{int(targets[index])} -> {int(predictions[index])}", fontsize=8)
            ax.axis("off")
        figure.suptitle(f"Misclassified, {stage}: {len(misclassified)} of {len(targets)}"
                        f" (true -> predicted; the first {len(wrong)})", fontsize=9)
        save_figure(trainer, figure, f"misclassified{suffix}", f"{stage}/misclassified")

    def on_test_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.draw(trainer, pl_module, "test")


class SaveTokenizer(pl.Callback):
    """Writes the data's tokenizer as ``<run folder>/tokenizer.json`` when fit starts, so that
    ``python -m lstm_pl.generate`` finds it beside the run's checkpoints."""

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            trainer.datamodule.save_tokenizer(run_folder(trainer))
