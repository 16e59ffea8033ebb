"""Thin LightningModules: each builds one network from ``models.py`` and says how it trains and
what it logs (regression, classification, language model). The optimizer (and any schedule) is
LightningCLI's ``optimizer:`` config."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveFloat
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy

from .errors import ConfigError
from .models import LanguageModelSettings, ManyToOneSettings, ManyToOne, WordLanguageModel


# What the data decides for the model: a DataModule attribute -> the task's init argument it sets.
# The CLI links each when the classes are made (where both ends have it); a resume does not compare
# them (a checkpoint of other data differs in its data class; a vocabulary is checked on loading).
DATA_LINKS = {"input_size": "net.input_size", "vocab_size": "net.vocab_size", "num_classes": "net.output_size",
              "unknown_id": "unknown_id", "lr_window": "lr_window"}


def stage_metrics(**metrics) -> torch.nn.ModuleDict:
    """One fresh metric per evaluation stage and name, keyed ``<stage>_<name>`` (val and test keep
    their own state): ``stage_metrics(loss=MeanMetric)`` -> {"val_loss": ..., "test_loss": ...}."""
    return torch.nn.ModuleDict({f"{stage}_{name}": make() for stage in ("val", "test") for name, make in metrics.items()})


class Task(pl.LightningModule, abc.ABC):
    """What every task shares, so that a task says only how it scores a batch:

    - ``batch_loss(batch)``: a training batch's loss, what the training step returns (recorded as
      ``train/loss`` by ``scalars.TrainLoss``, without a per-step ``self.log``);
    - ``measure(batch, stage)``: update the stage's metrics (``self.metrics``, from ``stage_metrics``)
      with one batch; returns their names, and each is logged as ``<stage>/<name>`` (val, test);
    - ``recomputable``: whether ``batch_loss`` of a batch can be computed again without side effect
      (what ``LossCurves(after_update)`` re-evaluates after the update); not so for a model whose
      loss depends on a state carried in from the batch before.
    ``shown`` names the metrics the progress bar shows."""

    recomputable: ClassVar[bool] = True
    shown: ClassVar[tuple[str, ...]] = ("loss",)
    metrics: torch.nn.ModuleDict
    # Lightning writes the name of the hook it is in onto the module around every hook call (about
    # 40 times a training step); nn.Module.__setattr__ spends 1.5 us on each, looking through the
    # parameters, submodules and buffers, which these plain attributes never are.
    _plain_attributes: ClassVar[frozenset[str]] = frozenset({"_current_fx_name", "_metric_attributes"})

    def __setattr__(self, name: str, value) -> None:
        if name in self._plain_attributes:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @abc.abstractmethod
    def batch_loss(self, batch) -> torch.Tensor:
        """A training batch's loss (what the step minimises)."""

    @abc.abstractmethod
    def measure(self, batch, stage: str) -> tuple[str, ...]:
        """Update ``self.metrics``' ``<stage>_<name>`` with one batch; the names updated."""

    def training_step(self, batch, batch_idx):
        return self.batch_loss(batch)

    def evaluate(self, batch, stage: str):
        """Update and log the stage's metrics with one batch; returns the step's outputs, what the
        callbacks' ``on_<stage>_batch_end`` receive (None here; see ``LanguageModelTask``)."""
        self.log_measured(self.measure(batch, stage), stage)

    def log_measured(self, names: tuple[str, ...], stage: str) -> None:
        for name in names:
            self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], prog_bar=name in self.shown)

    def validation_step(self, batch, batch_idx):
        return self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        return self.evaluate(batch, "test")


class ManyToOneTask(Task):
    """A ``ManyToOne`` network scored on its one output per sequence (the regressions, the
    classifiers): ``criterion(output, target)`` is the training loss; an ``example_steps``-step
    sequence is traced for TensorBoard's graph."""

    criterion: ClassVar[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

    def __init__(self, net: ManyToOneSettings, example_steps: int):
        super().__init__()
        self.net = ManyToOne(net)
        self.example_input_array = torch.zeros(1, example_steps, net.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, F) -> the output for each sequence (B, net.output_size)."""
        return self.net(x)

    def batch_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return self.criterion(self(x), y)


class RegressionTask(ManyToOneTask):
    """Sequence-to-one regression (sine, adding): the mean squared error, mean((ŷ - y)²).

    Logged: ``train/loss`` every step; on validation and test, ``loss`` (the MSE), and where
    configured ``baseline_mse`` (the MSE of always answering ``baseline``) and ``within_tolerance``
    (the share of sequences whose absolute error is below ``tolerance``: Hochreiter &
    Schmidhuber's 0.04 on adding).
    """

    criterion = staticmethod(F.mse_loss)

    def __init__(self, net: ManyToOneSettings = ManyToOneSettings(), baseline: Optional[float] = None,
                 tolerance: Optional[PositiveFloat] = None):
        super().__init__(net, example_steps=10)
        self.save_hyperparameters()
        # Only the metrics it reports: Lightning walks every submodule twice a validation.
        self.metrics = stage_metrics(loss=MeanSquaredError,
                                     **({"baseline_mse": MeanSquaredError} if baseline is not None else {}),
                                     **({"within_tolerance": MeanMetric} if tolerance is not None else {}))

    def measure(self, batch, stage: str) -> tuple[str, ...]:
        x, y = batch
        prediction = self(x)
        self.metrics[f"{stage}_loss"](prediction, y)
        names = ["loss"]
        if self.hparams.baseline is not None:
            self.metrics[f"{stage}_baseline_mse"](torch.full_like(y, self.hparams.baseline), y)
            names.append("baseline_mse")
        if self.hparams.tolerance is not None:
            self.metrics[f"{stage}_within_tolerance"](((prediction - y).abs() < self.hparams.tolerance).float())
            names.append("within_tolerance")
        return tuple(names)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


class ClassificationTask(ManyToOneTask):
    """Sequence classification (digits, MNIST read row by row): the regressions' many-to-one
    network, its head giving one logit per class (``net.output_size``, linked from
    ``data.num_classes``) from the last hidden state; the mean cross-entropy.

    Logged: ``train/loss`` every step; on validation and test, ``loss`` (mean cross-entropy per
    sequence) and ``accuracy`` (torchmetrics' multiclass accuracy, micro-averaged).
    """

    criterion = staticmethod(F.cross_entropy)
    shown = ("loss", "accuracy")

    def __init__(self, net: ManyToOneSettings = ManyToOneSettings(output_size=10)):
        super().__init__(net, example_steps=8)
        self.save_hyperparameters()
        self.metrics = stage_metrics(loss=MeanMetric,
                                     accuracy=lambda: MulticlassAccuracy(net.output_size, average="micro"))

    def measure(self, batch, stage: str) -> tuple[str, ...]:
        x, y = batch
        logits = self(x)
        self.metrics[f"{stage}_loss"].update(F.cross_entropy(logits, y, reduction="none"))
        self.metrics[f"{stage}_accuracy"].update(logits, y)
        return ("loss", "accuracy")

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(dim=-1)


class Perplexity(MeanMetric):
    """exp of the token-weighted mean cross-entropy: PPL = exp(Σ_k n_k·CE_k / Σ_k n_k), n_k the
    tokens of window k (feed it ``(loss, n_k)``)."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


PREDATES_MATCH_WEIGHT = ("ckpt_path: {path} has a learned cache from before its gate read the match (no "
                         "net.cache.match_weight); it tests, validates and generates as trained, but cannot be "
                         "resumed: start the run again")


def predates_match_weight(checkpoint: dict) -> bool:
    """A language model's checkpoint whose learned cache was written before the gate read the match
    (stop 40): it is that model with c = 0, and its optimizer state lacks c."""
    weights = checkpoint.get("state_dict") or {}
    return "net.cache.query.weight" in weights and "net.cache.match_weight" not in weights


class LanguageModelTask(Task):
    """Word-level language model (Shakespeare): cross-entropy on next-word prediction.

    The windows of an epoch arrive in order, batch row b continuing row b (``text.StreamWindows``);
    with ``stateful`` the final state of window k starts window k + 1, detached (truncated BPTT),
    in training and evaluation alike, and every epoch of each stage starts from zeros.
    ``stateful: false`` starts every window from zeros. ``lr_window``: see ``optimizer_step``. Gradient clipping is the Trainer's (``gradient_clip_val``). Logged for train, val and test:
    ``loss`` (mean cross-entropy per token, nats) and ``perplexity`` (its exp).
    """

    recomputable = False  # a window's loss depends on the state the window before carried in
    shown = ("perplexity",)

    def __init__(self, net: LanguageModelSettings = LanguageModelSettings(), stateful: bool = True,
                 unknown_id: Optional[int] = None, lr_window: Optional[int] = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = WordLanguageModel(net)
        self.example_input_array = torch.zeros(1, 10, dtype=torch.long)  # traced for TensorBoard's graph
        self.train_perplexity = Perplexity(dist_sync_on_step=True)  # each step's value over all processes
        self.metrics = stage_metrics(loss=MeanMetric, perplexity=Perplexity, perplexity_without_unk=Perplexity)
        self.states: dict[str, object] = {}
        self.rng_state_to_restore: torch.Tensor | None = None  # a resumed run's generator (on_load_checkpoint)
        self.window_length: int | None = None  # the training window's length (for lr_window)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A run resumed from this checkpoint goes on as if never stopped: the state carried into
        the next training window (mid-epoch) and the random generator (dropout's masks)."""
        checkpoint["carried_state"] = self.states.get("train")
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of another vocabulary cannot fill this model: say so in one line. One with a
        learned cache from before its gate read the match is that model with c = 0."""
        saved = checkpoint.get("hyper_parameters", {}).get("net", {})
        saved = saved.get("vocab_size") if isinstance(saved, dict) else getattr(saved, "vocab_size", None)
        ours = self.net.embedding.num_embeddings
        if saved is not None and saved != ours:
            raise ConfigError(f"ckpt_path: the checkpoint's vocabulary has {saved} words, these data settings build "
                              f"{ours}; use the data settings it was trained with")
        if predates_match_weight(checkpoint):  # the same model with c = 0
            if self._trainer is not None and self.trainer.state.fn == "fit":  # the CLI refuses it before this
                raise ConfigError(PREDATES_MATCH_WEIGHT.format(path="the checkpoint"))
            checkpoint["state_dict"]["net.cache.match_weight"] = torch.zeros(())
        self.states["train"] = checkpoint.get("carried_state")
        # Set when the first resumed batch starts, not now: nothing until then may draw from it.
        self.rng_state_to_restore = checkpoint.get("torch_rng_state")

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """With ``lr_window`` (linked from the data's ``variable_windows``), the step's learning rate is
        lr · T / lr_window for its window of T words, as AWD-LSTM scales it; the configured rates
        are restored after the step, so schedulers and the logged rate see them unchanged."""
        if self.hparams.lr_window is None or self.window_length is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        rates = [group["lr"] for group in optimizer.param_groups]
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate * self.window_length / self.hparams.lr_window
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.window_length = batch[0].shape[1]
        if self.rng_state_to_restore is not None:
            torch.set_rng_state(self.rng_state_to_restore)
            self.rng_state_to_restore = None

    def forward(self, tokens: torch.Tensor, state=None):
        return self.net(tokens, state)

    def window(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One window's log-probabilities of its targets (B·T,), the targets (B·T,), the net's
        penalty (AR/TAR, in training) and the last layer's output (B, T, H), from what the stage's
        previous window carried in (kept for the next one): ``WordLanguageModel.score``."""
        x, y = batch
        log_probs, self.states[stage], outputs, dropped = self.net.score(
            x, y, self.states.get(stage) if self.hparams.stateful else None)
        penalty = self.net.penalty(outputs, dropped) if stage == "train" else log_probs.new_zeros(())
        return log_probs.reshape(-1), y.reshape(-1), penalty, outputs

    def on_train_epoch_start(self) -> None:
        """Zeros at an epoch's start. (Lightning does not call this hook when it resumes an epoch in
        its middle: that epoch goes on with the state the checkpoint carried.)"""
        self.states["train"] = None

    def on_validation_epoch_start(self) -> None:
        self.states["val"] = None

    def on_test_epoch_start(self) -> None:
        self.states["test"] = None

    def batch_loss(self, batch) -> torch.Tensor:
        """The mean cross-entropy, plus AR/TAR where the net's settings ask for them."""
        return self.cross_entropy_and_penalty(batch)[0]

    def cross_entropy_and_penalty(self, batch) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A training window's loss (cross-entropy + AR/TAR), its cross-entropy alone, its tokens."""
        log_probs, targets, penalty, _ = self.window(batch, "train")
        cross_entropy = -log_probs.mean()
        return cross_entropy + penalty, cross_entropy, targets.numel()

    def training_step(self, batch, batch_idx):
        loss, cross_entropy, tokens = self.cross_entropy_and_penalty(batch)
        # Each step's perplexity too (of the cross-entropy alone), over all processes; the epochs' values are val/*.
        self.train_perplexity(cross_entropy.detach(), tokens)
        self.log("train/perplexity", self.train_perplexity, on_step=True, on_epoch=False)
        return loss

    def measure(self, batch, stage: str) -> tuple[str, ...]:
        return self.score(batch, stage)[0]

    def evaluate(self, batch, stage: str) -> dict[str, torch.Tensor]:
        """``Task.evaluate``; the outputs are the window's ``hidden`` (the last layer's output, B×T×H),
        its ``targets`` (B×T) and their ``target_log_probs`` under the model (B×T): what
        ``NeuralCache`` (``lstm_pl/cache.py``) scores with."""
        names, outputs = self.score(batch, stage)
        self.log_measured(names, stage)
        return outputs

    def score(self, batch, stage: str) -> tuple[tuple[str, ...], dict[str, torch.Tensor]]:
        """``loss`` and ``perplexity`` over every target word; with ``unknown_id`` (linked from the
        data: ``<unk>``'s id) also ``perplexity_without_unk``, over the targets that are not ``<unk>``
        (what the model scores on words it knows; ``<unk>`` is an easy, frequent target). Returns
        the names updated and the window's outputs (``evaluate``)."""
        log_probs, targets, _, hidden = self.window(batch, stage)
        loss = -log_probs.mean()
        for name in ("loss", "perplexity"):
            self.metrics[f"{stage}_{name}"].update(loss, targets.numel())
        outputs = {"hidden": hidden, "targets": batch[1], "target_log_probs": log_probs.view_as(batch[1])}
        if self.hparams.unknown_id is None:
            return ("loss", "perplexity"), outputs
        known = targets != self.hparams.unknown_id
        if known.any():
            self.metrics[f"{stage}_perplexity_without_unk"].update(-log_probs[known].mean(), known.sum())
        return ("loss", "perplexity", "perplexity_without_unk"), outputs
