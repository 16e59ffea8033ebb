"""TF1's Adam (``lstm_pl.optim.TFAdam``) on each original run's network: its CPU step in one call of
the compiled module against its ``_foreach`` path (the GPU's, and the CPU's where the module does
not build):

    OMP_NUM_THREADS=1 python -m benchmarks.adam [--tasks sine adding] [--rounds 5]

Microseconds per ``optimizer.step()`` after one backward pass (the gradients then stay), the median
of ``--rounds`` interleaved rounds of 1,000 steps, and foreach/compiled (above 1: compiled faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.tasks import build, one_thread_each, training_batches
from lstm_pl import fused, optim


def step_seconds(optimizer: torch.optim.Optimizer, compiled: bool, steps: int = 1000) -> float:
    saved = optim.compiled_kernels
    optim.compiled_kernels = fused.kernels if compiled else (lambda: None)
    try:
        optimizer.step()
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        return (time.perf_counter() - start) / steps
    finally:
        optim.compiled_kernels = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["sine", "adding"], choices=["sine", "adding"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    one_thread_each()
    if fused.kernels() is None:
        raise SystemExit("the compiled module does not build here: nothing to compare")
    print("| task | parameters | compiled (µs) | _foreach (µs) | foreach/compiled |\n| --- | ---: | ---: | ---: | ---: |")
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as folder:
            cli = build(task, 10, 10, folder)
        net, optimizer = cli.model.net, cli.model.configure_optimizers()
        x, y = training_batches(cli, 1)[0]
        torch.nn.functional.mse_loss(net(x), y).backward()
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for compiled in times:
                times[compiled].append(step_seconds(optimizer, compiled))
        compiled, foreach = (statistics.median(times[c]) * 1e6 for c in (True, False))
        count = sum(p.numel() for p in net.parameters() if p.grad is not None)
        print(f"| {task} | {count:,} | {compiled:.1f} | {foreach:.1f} | {foreach / compiled:.2f} |", flush=True)


if __name__ == "__main__":
    main()
