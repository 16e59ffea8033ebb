"""``torch.compile`` on the sine step at the original's batch (10), against the eager step: the same
network, optimizer and batches, a plain loop, one thread. Three contenders, interleaved round by round:
the eager step, the compiled network (``torch.compile(net)``), the compiled forward-and-backward.

    OMP_NUM_THREADS=1 python -m benchmarks.compile [--rounds 3] [--steps 1000]

Prints ms per step (median of the rounds) and each contender's speed relative to the eager step
(above 1: faster). On the CPU, inductor leaves ``aten::lstm`` to oneDNN, so only the head and the
loss can fuse; the guards and the compiled graph's call cost are what is left to measure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.tasks import build, one_thread_each, training_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps first (compilation included)")
    args = parser.parse_args()
    one_thread_each()
    with tempfile.TemporaryDirectory() as folder:
        cli = build("sine", 10, args.warmup + args.steps, folder)
        batches = training_batches(cli, args.warmup + args.steps)
        net, optimizer = cli.model.net, cli.model.configure_optimizers()

        def step_of(model):
            def step(x, y):
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
            return step

        contenders = {"eager": step_of(net), "compiled network": step_of(torch.compile(net)),
                      "compiled step": torch.compile(step_of(net))}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, step in contenders.items():
                for index, (x, y) in enumerate(batches):
                    if index == args.warmup:
                        start = time.perf_counter()
                    optimizer.zero_grad()
                    step(x, y)
                    optimizer.step()
                times[name].append((time.perf_counter() - start) / args.steps)
    eager = statistics.median(times["eager"])
    print("| contender | ms per step | eager / contender |\n| --- | ---: | ---: |")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds * 1e3:.3f} | {eager / seconds:.2f} |")


if __name__ == "__main__":
    main()
