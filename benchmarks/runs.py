"""The original runs end to end, as a user runs them, against the original program doing the same
work in TensorFlow:

    OMP_NUM_THREADS=1 python -m benchmarks.runs [--runs sine sine_rnn adding adding_rnn] [--rounds 3]
    OMP_NUM_THREADS=1 python -m benchmarks.runs --runs adding --cells lstm_peephole lstm_cec

- ``port``: ``python -m lstm_pl fit --config configs/<run>.yaml`` in this process (the CLI's
  parsing, the data, training, validation at the config's cadence, the non-finite guard,
  TensorBoard, checkpoints, the figures), from the CLI's start to its return;
- ``TF1 graph``: the parity harness's rebuild of the original program (``parity/tf1_side.py``:
  ``tf.compat.v1`` LSTMCell/BasicRNNCell, ``AdamOptimizer``, one ``sess.run`` a step and the
  original's ``loss.eval`` of the batch after its update), validating at the port's cadence, from
  building its graph to its last validation;
- ``Keras``: the harness's Keras network (``parity/tensorflow_side.py``), ``tf.function`` train
  step, the after-update loss and the same validations.

- ``TF1 graph, same work``: the same program doing the rest of what the port's run does (the
  original's own ``predict``, closed loop, at the port's figure cadence on sine; the outputs for
  the figures; the two figures written as PNG files: ``tf1_same_work``).

The TensorFlow contenders train on the same batches from the same initial weights (taken from a
stripped port run made once per run, untimed). ``TF1 graph`` and ``Keras`` draw no figures and
write no files: the port's column is the whole of what a user waits for. Interpreter start and imports are excluded from all
three and reported apart (a fresh process importing each side, median of ``--rounds``). Everything
on one thread; contenders interleaved round by round; the median of ``--rounds``. Prints one
Markdown table: seconds per run and the ratios TensorFlow/port (above 1: the port is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np

from benchmarks.tasks import one_thread_each
from lstm_pl.cli import CLI
from parity import original, pytorch_side, tf1_side
from parity.checks import training_inputs

RUNS = ("sine", "sine_rnn", "adding", "adding_rnn")
IMPORTS = {"port": "import lstm_pl.cli",
           "TF1": "import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'; import tensorflow as tf; tf.compat.v1.nn.rnn_cell.LSTMCell"}


def port(run: str, folder: str, extra: tuple[str, ...] = ()) -> float:
    """Seconds of ``fit --config configs/<run>.yaml`` (``extra``: more overrides, e.g. the
    accelerator), in this process, its output swallowed."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        CLI(args=["fit", "--config", f"configs/{run}.yaml", f"--trainer.logger.init_args.save_dir={folder}", *extra])
    return time.perf_counter() - start


def cadence(run: str, folder: str) -> tuple[int, int]:
    """The port's validation cadence in steps (``trainer.val_check_interval``) and that of its
    closed-loop prediction (``SineWaveform.every_n_steps``; 0 where the run has none)."""
    config = pytorch_side.build(f"configs/{run}.yaml", [f"--trainer.logger.init_args.save_dir={folder}"]).config
    waveform = [callback for callback in config.trainer.callbacks or [] if callback.class_path.endswith("SineWaveform")]
    return int(config.trainer.val_check_interval), int(waveform[0].init_args.every_n_steps) if waveform else 0


def tf1_same_work(recording, inputs, validate_every: int, closed_loop_every: int, folder: str) -> float:
    """Seconds of the TF1 graph program doing the port's whole run: ``tf1_side.train`` at the port's
    validation cadence, with the original's closed-loop ``predict`` at the port's figure cadence
    (sine) and its outputs on the series (sine) or the validation split (adding) at the end, then
    the two figures the port draws (the loss curves; the waveform or the prediction scatter),
    written as PNG files as the original's main1.py/main2.py wrote theirs."""
    from matplotlib.figure import Figure

    start = time.perf_counter()
    data = recording.data
    if data["kind"] == "sine":
        windows, _ = original.sine(data, np.random.RandomState(data["seed"]))
        extra = dict(closed_loop_every=closed_loop_every, first_window=windows[0], closed_loop_steps=len(windows),
                     predict=windows)
    else:
        extra = dict(predict=inputs.val_batches[0][0])
    result = tf1_side.train(recording, "float32", inputs, validate_every=validate_every, **extra)
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    ax.plot(result["losses"], lw=0.8, label="train")
    ax.plot(result["losses_after_update"], lw=0.8, label="train, after update")
    ax.plot(np.arange(1, len(result["val_losses"]) + 1) * validate_every, result["val_losses"], label="val")
    ax.set(xlabel="step", ylabel="MSE", yscale="log")
    ax.legend()
    figure.savefig(Path(folder) / "loss_curves.png", dpi=110, bbox_inches="tight")
    if data["kind"] == "sine":
        figure = Figure(figsize=(9, 4))
        ax = figure.subplots()
        wave = np.concatenate([windows[0, :, 0], windows[1:, -1, 0]])
        ax.plot(wave, lw=0.8, label="data")
        ax.plot(np.arange(len(windows)) + windows.shape[1], result["predictions"][:, 0], label="one step")
        ax.plot(np.arange(len(windows)) + windows.shape[1], result["closed_loop"], label="closed loop")
        ax.legend()
        figure.savefig(Path(folder) / "waveform.png", dpi=110, bbox_inches="tight")
    else:
        figure = Figure(figsize=(5, 5))
        ax = figure.subplots()
        ax.scatter(inputs.val_batches[0][1][:, 0], result["predictions"][:, 0], s=4, alpha=0.5)
        figure.savefig(Path(folder) / "predictions.png", dpi=110, bbox_inches="tight")
    return time.perf_counter() - start


def import_seconds(side: str, rounds: int) -> float:
    """Median seconds of a fresh interpreter that imports ``side`` and exits."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS[side]], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(run: str, rounds: int) -> tuple[int, dict[str, float]]:
    """The run's validations and each contender's median seconds, interleaved round by round."""
    from parity import tensorflow_side

    with tempfile.TemporaryDirectory() as folder:
        every, closed_loop_every = cadence(run, folder)
        recording = pytorch_side.record(f"configs/{run}.yaml", "float32", 0, Path(folder) / "recording")
        inputs = training_inputs(recording, "float32")
        contenders = {
            "port": lambda: port(run, folder),
            "tf1": lambda: tf1_side.train(recording, "float32", inputs, validate_every=every)["seconds"],
            "tf1 same work": lambda: tf1_same_work(recording, inputs, every, closed_loop_every, folder),
            "keras": lambda: tensorflow_side.train(recording, "float32", inputs, validate_every=every,
                                                   after_update=True)["seconds"]}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, contender in contenders.items():
                times[name].append(contender())
    return len(recording.losses) // every, {name: statistics.median(values) for name, values in times.items()}


def cells(run: str, others: list[str], rounds: int) -> dict[str, float]:
    """The port's median seconds for ``run`` with ``nn.LSTM`` and with each cell of ``others``
    (``model.init_args.net.cell``), interleaved round by round: the whole run, evaluation included."""
    contenders = ["lstm", *others]
    times: dict[str, list[float]] = {cell: [] for cell in contenders}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for cell in contenders:
                times[cell].append(port(run, folder, (f"--model.init_args.net.cell={cell}",)))
    return {cell: statistics.median(values) for cell, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", nargs="+", choices=["lstm_peephole", "lstm_cec"],
                        help="instead: the port alone, each run (an LSTM one) with nn.LSTM and with these cells")
    args = parser.parse_args()
    one_thread_each()
    if args.cells:
        print("| run | cell | port (s) | x nn.LSTM |\n| --- | --- | ---: | ---: |")
        for run in args.runs:
            seconds = cells(run, args.cells, args.rounds)
            for cell, value in seconds.items():
                print(f"| {run} | {cell} | {value:.2f} | {value / seconds['lstm']:.2f} |", flush=True)
        return
    print(f"imports in a fresh interpreter (excluded below): port {import_seconds('port', args.rounds):.1f} s, "
          f"TensorFlow with tf_keras {import_seconds('TF1', args.rounds):.1f} s", flush=True)
    print("| run | validations | port (s) | TF1 graph (s) | TF1 graph, same work (s) | Keras (s) | TF1/port | "
          "TF1 same work/port | Keras/port |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in args.runs:
        validations, seconds = measure(run, args.rounds)
        print(f"| {run} | {validations} | {seconds['port']:.2f} | {seconds['tf1']:.2f} | {seconds['tf1 same work']:.2f} | "
              f"{seconds['keras']:.2f} | {seconds['tf1'] / seconds['port']:.2f} | "
              f"{seconds['tf1 same work'] / seconds['port']:.2f} | {seconds['keras'] / seconds['port']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
