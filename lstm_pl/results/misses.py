"""Which held-out test sequences of the adding problem a checkpoint gets wrong by the task's
tolerance or more, and where their two markers stand: the few misses that decide whether a run has
solved the task in Hochreiter and Schmidhuber's sense (RESULTS.md, "Longer dependencies").

    python -m lstm_pl.results.misses --config configs/adding_t1000.yaml --ckpt_path RUN/checkpoints/last.ckpt

Draws only the test set (``data.init_args.test_seed``), never the training data; prints one line
per miss, then how many misses and test sequences have a marker on the last step.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from .. import runtime
from ..data import AddingDataModule
from ..errors import ConfigError
from ..tasks import RegressionTask
from .configs import datamodule


def find_misses(model: RegressionTask, x: np.ndarray, y: np.ndarray, tolerance: float,
                chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The model's predictions (N,) for sequences x (N, T, 2), and the indices whose absolute error
    against y (N, 1) is ``tolerance`` or more."""
    with torch.no_grad():
        predictions = torch.cat([model(torch.tensor(x[start:start + chunk], dtype=torch.float32))
                                 for start in range(0, len(x), chunk)])[:, 0].double().numpy()
    return predictions, np.flatnonzero(np.abs(predictions - y[:, 0]) >= tolerance)


def main(argv: list[str] | None = None) -> None:
    runtime.start()
    parser = argparse.ArgumentParser(prog="python -m lstm_pl.results.misses", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the run's config (its data settings draw the test set)")
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to score")
    args = parser.parse_args(argv)
    try:
        data = datamodule(args.config)
        if not isinstance(data, AddingDataModule) or data.test_seed is None:
            raise ConfigError(f"--config: {args.config} is not an adding problem with a held-out test set "
                              f"(data.init_args.test_seed)")
        model = RegressionTask.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True).eval()
        if model.hparams.tolerance is None:
            raise ConfigError(f"--ckpt_path: {args.ckpt_path} was trained without model.init_args.tolerance")
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        sys.stderr.write(f"lstm_pl.results.misses: error: {error}\n")
        sys.exit(2)
    x, y = data.make_test_arrays(np.random.RandomState(data.test_seed))
    predictions, missed = find_misses(model, x, y, model.hparams.tolerance)
    last = x.shape[1] - 1
    print("sequence  markers at  target  prediction  error")
    for index in missed:
        markers = np.flatnonzero(x[index, :, 1])
        print(f"{index:8d}  {str(markers.tolist()):>10}  {y[index, 0]:6.3f}  {predictions[index]:10.3f}  "
              f"{predictions[index] - y[index, 0]:+.3f}")
    on_last = x[:, last, 1] == 1
    print(f"{len(missed)} of {len(x)} test sequences off by {model.hparams.tolerance:g} or more; "
          f"{int(on_last[missed].sum())} of them have a marker on the last step (t = {last}), "
          f"as {int(on_last.sum())} of the {len(x)} do")


if __name__ == "__main__":
    main()
