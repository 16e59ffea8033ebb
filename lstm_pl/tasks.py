"""Thin LightningModules: each builds one network from ``models.py`` and says how it trains."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MeanSquaredError

from .cells import CELLS, Cell
from .errors import ConfigError
from .models import Init, SequenceRegressor, WordLanguageModel


def check_cell(cell: str) -> None:
    """Raise ``ConfigError`` naming ``model.cell`` unless it is one of ``CELLS``."""
    if cell not in CELLS:
        raise ConfigError(f"model.cell: unknown cell {cell!r}; choose one of {', '.join(CELLS)}")


def adam(module: pl.LightningModule) -> torch.optim.Adam:
    """Adam over the trainable parameters (TF1 init freezes nn.LSTM's second bias), lr, betas and
    eps from the module's hyperparameters."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    h = module.hparams
    return torch.optim.Adam(trainable, lr=h.lr, betas=tuple(h.betas), eps=h.eps)


def check_positive(**values: float) -> None:
    """Raise ``ConfigError`` naming the first key whose value is not positive."""
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"model.{key} must be positive, got {value}")


class RegressionTask(pl.LightningModule):
    """Sequence-to-one regression (sine, adding): MSE loss, Adam.

    Logged: ``train/loss``; on validation and test, ``loss`` (the MSE), and where configured ``baseline_mse``
    (the MSE of always answering ``baseline``) and ``within_tolerance`` (the share of sequences
    whose absolute error is below ``tolerance``: Hochreiter & Schmidhuber's 0.04 on adding).
    """

    def __init__(self, input_size: int = 1, output_size: int = 1, cell: Cell = "lstm", hidden_size: int = 50,
                 num_layers: int = 1, init: Init = "tf1", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, chrono_t_max: float | None = None, baseline: float | None = None,
                 tolerance: float | None = None):
        super().__init__()
        check_cell(cell)
        check_positive(input_size=input_size, output_size=output_size, hidden_size=hidden_size,
                       num_layers=num_layers, lr=lr, eps=eps)
        if chrono_t_max is not None and (chrono_t_max <= 2 or cell in ("rnn", "lstm_cec")):
            raise ConfigError(f"model.chrono_t_max needs a value above 2 and a cell with a forget gate, "
                              f"got {chrono_t_max} with cell {cell!r}")
        self.save_hyperparameters()
        self.net = SequenceRegressor(input_size, output_size, cell, hidden_size, num_layers, init, chrono_t_max)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric()
            for stage in ("val", "test")
            for name, metric in (("loss", MeanSquaredError), ("baseline_mse", MeanSquaredError),
                                 ("within_tolerance", MeanMetric))
        })

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        expected = getattr(data, "input_size", self.hparams.input_size)
        if expected != self.hparams.input_size:
            raise ConfigError(f"model.input_size is {self.hparams.input_size} but the data has {expected} features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        prediction = self(x)
        logged = {"loss": self.metrics[f"{stage}_loss"]}
        logged["loss"](prediction, y)
        if self.hparams.baseline is not None:
            logged["baseline_mse"] = self.metrics[f"{stage}_baseline_mse"]
            logged["baseline_mse"](torch.full_like(y, self.hparams.baseline), y)
        if self.hparams.tolerance is not None:
            logged["within_tolerance"] = self.metrics[f"{stage}_within_tolerance"]
            logged["within_tolerance"](((prediction - y).abs() < self.hparams.tolerance).float())
        for name, metric in logged.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "loss")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return adam(self)


def detach_state(state):
    """The recurrent state cut from the graph that made it: truncated backpropagation through time."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.detach()
    return tuple(part.detach() for part in state)


class Perplexity(MeanMetric):
    """exp of the token-weighted mean cross-entropy: PPL = exp(Σ_k n_k·CE_k / Σ_k n_k), n_k the
    tokens of window k (feed it ``(loss, n_k)``)."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class LanguageModelTask(pl.LightningModule):
    """Word-level language model (Shakespeare): cross-entropy on next-word prediction, Adam.

    The windows of an epoch arrive in order, batch row b continuing row b (``text.StreamWindows``);
    with ``stateful`` the final state of window k starts window k + 1, detached (truncated BPTT),
    in training and evaluation alike, and every epoch of each stage starts from zeros.
    ``stateful: false`` starts every window from zeros. ``vocab_size: null`` takes the data's
    vocabulary size at setup, stored in the hyperparameters so a checkpoint rebuilds the same net.
    Gradient clipping is the Trainer's (``gradient_clip_val``). Logged for train, val and test:
    ``loss`` (mean cross-entropy per token, nats) and ``perplexity`` (its exp).
    """

    def __init__(self, vocab_size: int | None = None, embedding_size: int = 128, cell: Cell = "lstm",
                 hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.0, tie_weights: bool = False,
                 init: Init = "tf1", stateful: bool = True, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__()
        check_cell(cell)
        check_positive(embedding_size=embedding_size, hidden_size=hidden_size, num_layers=num_layers, lr=lr, eps=eps)
        if vocab_size is not None:
            check_positive(vocab_size=vocab_size)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {dropout}")
        if tie_weights and embedding_size != hidden_size:
            raise ConfigError(f"model.tie_weights needs embedding_size == hidden_size, got {embedding_size} and {hidden_size}")
        self.save_hyperparameters()
        self.net = self.build_net() if vocab_size is not None else None
        self.train_perplexity = Perplexity()
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric() for stage in ("val", "test")
            for name, metric in (("loss", MeanMetric), ("perplexity", Perplexity))
        })
        self.states: dict[str, object] = {}

    def build_net(self) -> WordLanguageModel:
        h = self.hparams
        return WordLanguageModel(h.vocab_size, h.embedding_size, h.cell, h.hidden_size, h.num_layers, h.dropout,
                                 h.tie_weights, h.init)

    def setup(self, stage: str) -> None:
        data_vocab = getattr(getattr(self.trainer, "datamodule", None), "vocab_size", None)
        if self.hparams.vocab_size is None:
            if data_vocab is None:
                raise ConfigError("model.vocab_size is null and the data has no vocabulary to take it from")
            self.hparams.vocab_size = data_vocab
            self.net = self.build_net()
        elif data_vocab is not None and data_vocab != self.hparams.vocab_size:
            raise ConfigError(f"model.vocab_size is {self.hparams.vocab_size} but the data's vocabulary has {data_vocab} words")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("vocab_size")
        if saved is not None and saved != self.hparams.vocab_size:
            raise ConfigError(f"model.vocab_size: the checkpoint has {saved} words, this run {self.hparams.vocab_size}")

    def on_fit_start(self) -> None:
        """Save the tokenizer with the run, beside the checkpoints."""
        save = getattr(self.trainer.datamodule, "save_tokenizer", None)
        folder = getattr(self.trainer.checkpoint_callback, "dirpath", None)
        if save is not None and folder is not None and self.trainer.is_global_zero:
            save(Path(folder))

    def forward(self, tokens: torch.Tensor, state=None):
        return self.net(tokens, state)

    def _loss(self, batch, stage: str) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of one window, the state carried in from the stage's previous window."""
        x, y = batch
        logits, state = self(x, self.states.get(stage) if self.hparams.stateful else None)
        self.states[stage] = detach_state(state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), y.numel()

    def on_train_epoch_start(self) -> None:
        self.states["train"] = None

    def on_validation_epoch_start(self) -> None:
        self.states["val"] = None

    def on_test_epoch_start(self) -> None:
        self.states["test"] = None

    def training_step(self, batch, batch_idx):
        loss, tokens = self._loss(batch, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=tokens)
        self.train_perplexity(loss.detach(), tokens)
        self.log("train/perplexity", self.train_perplexity, on_step=True, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        loss, tokens = self._loss(batch, stage)
        for name in ("loss", "perplexity"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(loss, tokens)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "perplexity")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return adam(self)
