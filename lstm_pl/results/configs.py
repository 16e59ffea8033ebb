"""What the results take from ``configs/``, read as ``python -m lstm_pl fit --config`` reads it: the
seed every config trains with as it stands, and the DataModule a config builds (the data figures'
settings), so that no setting a config holds is written again here."""

from __future__ import annotations

import functools
import warnings

import yaml
from pytorch_lightning import LightningDataModule

from lstm_pl.cli import BASE_CONFIG, CLI

CHECKOUT = BASE_CONFIG.parents[1]


@functools.cache
def first_seed() -> int:
    """``seed_everything`` of ``configs/base.yaml``, which every config starts from: the seed of a
    run that sets none (seed 12, the original's)."""
    return yaml.safe_load(BASE_CONFIG.read_text())["seed_everything"]


def datamodule(config: str) -> LightningDataModule:
    """The DataModule ``python -m lstm_pl fit --config CONFIG`` builds (base.yaml, then the chain of
    ``config: other.yaml`` the file starts from), not set up: its settings, no data read.
    ``config`` relative to the checkout, or absolute."""
    with warnings.catch_warnings():  # LightningCLI's note that args= is given while sys.argv holds this command's own
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        return CLI(args=["--config", str(CHECKOUT / config)], run=False).datamodule
