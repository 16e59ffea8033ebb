"""Where the seconds of an original run go, as a user runs it (``fit --config configs/<run>.yaml``,
in this process, as ``benchmarks.runs`` times it):

    OMP_NUM_THREADS=1 python -m benchmarks.breakdown [--run sine] [--rounds 3]

Timers around the parts of Lightning's loop and of lstm_pl's callbacks (each wrapped for the
measurement only): the training steps (``_TrainingEpochLoop.advance``: data, forward, backward,
update, the per-step callbacks), the validations (``_EvaluationLoop.run``), and inside them the
checkpoint callback, the closed-loop prediction of sine's figure callback and ``self.log``; the
figures at the end; the rest (parsing, set-up, teardown) is the run's total minus the parts.
Median over the rounds of each part's seconds, and its share of the run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import statistics
import tempfile
import time

from benchmarks.tasks import one_thread_each


def timed(owner, name: str, label: str, totals: collections.Counter) -> None:
    """Wrap ``owner.name`` so that its seconds add up in ``totals[label]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="sine", choices=["sine", "sine_rnn", "adding", "adding_rnn"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one_thread_each()
    from pytorch_lightning.core.module import LightningModule
    from pytorch_lightning.loops.evaluation_loop import _EvaluationLoop
    from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop

    from lstm_pl import callbacks
    from lstm_pl.checkpoints import Checkpoints
    from lstm_pl.cli import CLI

    totals: collections.Counter = collections.Counter()
    parts = {"training steps": (_TrainingEpochLoop, "advance"), "validations": (_EvaluationLoop, "run"),
             "  of which checkpoints": (Checkpoints, "on_validation_end"),
             "  of which the closed-loop prediction": (callbacks.SineWaveform, "on_validation_epoch_end"),
             "  of which self.log": (LightningModule, "log"),
             "figures": (callbacks.FigureCallback, "on_fit_end")}
    for label, (owner, name) in parts.items():
        timed(owner, name, label, totals)
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds + 1):  # the first warms up
        totals.clear()
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            CLI(args=["fit", "--config", f"configs/{args.run}.yaml", f"--trainer.logger.init_args.save_dir={folder}"])
            total = time.perf_counter() - start
        top = sum(value for label, value in totals.items() if not label.startswith(" "))
        rounds.append({**{label: totals[label] for label in parts}, "rest": total - top, "run": total})
    medians = {label: statistics.median(r[label] for r in rounds[1:]) for label in rounds[0]}
    print(f"| {args.run}: part | seconds | share |\n| --- | ---: | ---: |")
    for label, seconds in medians.items():
        print(f"| {label} | {seconds:.3f} | {seconds / medians['run']:.0%} |")


if __name__ == "__main__":
    main()
