"""``python -m lstm_pl {fit,validate,test,predict} --config configs/TASK.yaml``: LightningCLI, with
the model and the DataModule chosen in the YAML (``class_path`` / ``init_args``)."""

from __future__ import annotations

import logging
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .errors import ConfigError

# "Seed set to N" would come before a config error's one line; the seed is in config.yaml anyway.
logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)


class OneLineErrorParser(LightningArgumentParser):
    """Reports a bad configuration as one line naming the key, instead of usage plus a traceback."""

    def error(self, message: str, ex: Exception | None = None):  # noqa: D102 - jsonargparse's hook
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        sys.stderr.write(f"lstm_pl: error: {' '.join(lines[:3])}\n")
        sys.exit(2)


class CLI(LightningCLI):
    """Every run gets checkpoints of the best model by ``val/loss`` and of the last epoch."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        checkpoints = ModelCheckpoint(monitor="val/loss", mode="min", save_last=True,
                                      filename="best-{epoch}-{step}", auto_insert_metric_name=False)
        super().__init__(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
                         subclass_mode_data=True, parser_class=OneLineErrorParser,
                         trainer_defaults={"callbacks": [checkpoints]}, args=args, run=run, **kwargs)


def config_error(error: BaseException | None) -> ConfigError | None:
    """The ``ConfigError`` behind ``error``, if any (jsonargparse wraps what ``__init__`` raises)."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    return error


def main(args=None) -> None:
    try:
        CLI(args=args)
    except Exception as error:
        cause = config_error(error)
        if cause is None:
            raise
        sys.stderr.write(f"lstm_pl: error: {cause}\n")
        sys.exit(2)
