"""Thin LightningModules: each builds one network from ``models.py`` and says how it trains."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MeanSquaredError

from .cells import CELLS, Cell
from .errors import ConfigError
from .models import Init, SequenceRegressor


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
        if cell not in CELLS:
            raise ConfigError(f"model.cell: unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
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
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.lr, betas=tuple(self.hparams.betas), eps=self.hparams.eps)
