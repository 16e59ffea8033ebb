"""``python -m parity.sensitivity TASK [overrides]``: how fast a run forgets a tiny difference.

Trains the config twice in PyTorch alone, in float64, the second time with the learning rate one
float32 step higher (TFAdam holds it in float32: 2e-7 relative), and prints the relative difference
of the training loss at a few steps. Where it grows exponentially, the run is chaotic: any rounding
difference between two implementations (1e-16 a step) grows the same way, so no float64 parity can
hold past the step where it reaches the tolerance, however exact the arithmetic. Measured (sine,
300 steps, --trainer.gradient_clip_val=0.5): unclipped the difference stays at 1e-8..1e-6; clipped
it is 2.6e-4 at step 100 and O(1) from step 140 (RESULTS.md, "Clipped runs").
"""

from __future__ import annotations

import argparse
import os

import numpy as np

STEPS_SHOWN = (10, 50, 100, 150, 200, 300, 500, 1000, 2000)


def losses(config: str, steps: int, overrides: list[str]) -> np.ndarray:
    """The per-step training losses of ``config`` in float64 (the hand-written cells eager)."""
    import pytorch_lightning as pl

    from lstm_pl.cli import CLI

    class Losses(pl.Callback):
        def __init__(self):
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    cli = CLI(args=["--config", config, "--trainer.logger=false", f"--trainer.max_steps={steps}",
                    "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
                    "--trainer.precision=64-true", *overrides], run=False)
    recorder = Losses()
    cli.trainer.callbacks = [recorder]
    cli.trainer.fit(cli.model, cli.datamodule)
    return np.array(recorder.values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m parity.sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a config's name under configs/")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3, help="the config's learning rate, nudged by one float32 step")
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("LSTM_PL_FUSED", "0")
    import torch

    from lstm_pl import runtime

    runtime.start()
    torch.set_num_threads(1)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", f"{args.task}.yaml")
    nudged = float(np.nextafter(np.float32(args.lr), np.float32(1.0)))
    a = losses(config, args.steps, overrides)
    b = losses(config, args.steps, [*overrides, f"--optimizer.init_args.lr={nudged!r}"])
    rel = np.abs(a - b) / np.abs(a)
    shown = [s for s in STEPS_SHOWN if s <= len(rel)]
    print(f"{args.task} {' '.join(overrides)}: lr {args.lr:g} -> {nudged!r}; relative loss difference "
          + ", ".join(f"step {s}: {rel[s - 1]:.1e}" for s in shown))


if __name__ == "__main__":
    main()
