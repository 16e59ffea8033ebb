"""The cost of AWD-LSTM's regularisers per training step, against plain dropout, on
``configs/shakespeare_best.yaml`` (one LSTM layer of 256, tied, dropout 0.5; 20 streams of 35 words):

    OMP_NUM_THREADS=1 python -m benchmarks.regularisers [--rounds 3] [--steps 20]

Each contender is the config with one regulariser added (AWD-LSTM's own values), then all of them;
then weight averaging (``averaging:``), AWD's variable windows and the learned cache
(``net.learned_cache_window``; not a regulariser, timed here beside them), each alone, and the four
with averaging and variable windows,
timed through the Trainer (training only: no validation, checkpoints or figures), the median of
``--rounds`` interleaved rounds after 3 warm-up steps. Prints seconds per step and the ratio to
plain dropout (the issue's bound: at most 1.2).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from benchmarks.tasks import timed_fit, training_only
from lstm_pl import runtime
from parity import pytorch_side

WARMUP = 3
CONTENDERS = {
    "dropout 0.5 (shakespeare_best.yaml)": [],
    "+ weight_drop 0.5": ["--model.init_args.net.weight_drop=0.5"],
    "+ embedding_dropout 0.1": ["--model.init_args.net.embedding_dropout=0.1"],
    "+ AR 2, TAR 1": ["--model.init_args.net.activation_penalty=2", "--model.init_args.net.temporal_penalty=1"],
    "all four": ["--model.init_args.net.weight_drop=0.5", "--model.init_args.net.embedding_dropout=0.1",
                 "--model.init_args.net.activation_penalty=2", "--model.init_args.net.temporal_penalty=1"],
    "+ averaged weights (from the first step)": ["--averaging.start_epoch=0"],
    # AWD's windows average about 34 words instead of 35: the per-step time compares near-equal work.
    "+ variable windows": ["--data.init_args.variable_windows=true", "--trainer.reload_dataloaders_every_n_epochs=1"],
    "+ learned cache, window 100": ["--model.init_args.net.learned_cache_window=100"],
    "+ learned cache, window 300": ["--model.init_args.net.learned_cache_window=300"],
    "all four, averaging and variable windows": [
        "--model.init_args.net.weight_drop=0.5", "--model.init_args.net.embedding_dropout=0.1",
        "--model.init_args.net.activation_penalty=2", "--model.init_args.net.temporal_penalty=1", "--averaging.start_epoch=0",
        "--data.init_args.variable_windows=true", "--trainer.reload_dataloaders_every_n_epochs=1"],
}


def seconds_per_step(overrides: list[str], steps: int, folder: str) -> float:
    cli = pytorch_side.build("configs/shakespeare_best.yaml",
                             [*overrides, *training_only(WARMUP + steps, folder), "--trainer.enable_progress_bar=false"])
    return timed_fit(cli, WARMUP, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runtime.start()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name, overrides in CONTENDERS.items():
                times[name].append(seconds_per_step(overrides, args.steps, folder))
    base = statistics.median(times[next(iter(CONTENDERS))])
    print("| regularisers | ms per step | / plain dropout |")
    print("| --- | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.1f} | {statistics.median(values) / base:.2f} |")


if __name__ == "__main__":
    main()
