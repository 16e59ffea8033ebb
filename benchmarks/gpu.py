"""The GPU check, for a machine with CUDA (``benchmarks/gpu.sh`` runs it): every task trained a
fixed number of steps through the Lightning Trainer at its large batch, in fp32 and bf16-mixed,
as steps/s and samples (tokens for the language model) per second, and whether cuDNN is there;
the framework's cost per step at the original batch (the port's step minus a bare PyTorch loop's
on the same device, ``benchmarks.tasks``; and the port with the non-finite guard reading the loss
on the host every step, ``non_finite.check: host``, against its default on a GPU, on the device); and the original runs end to end as a user runs them
(``benchmarks.runs``' port column; TensorFlow is not installed on the device machine).

    python -m benchmarks.gpu [--accelerator gpu] [--rounds 2]

(``--accelerator cpu`` runs the same code on the CPU, which is how it is tested without a GPU.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile

import torch

from benchmarks import runs
from benchmarks.tasks import TASKS, bare, port
from lstm_pl import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--runs", nargs="+", default=list(runs.RUNS), choices=list(runs.RUNS))
    args = parser.parse_args()
    runtime.start()
    cudnn = torch.backends.cudnn
    print(f"torch {torch.__version__}; CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}"
          f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}; cuDNN available: "
          f"{cudnn.is_available()}, enabled: {cudnn.enabled}, version: {cudnn.version() if cudnn.is_available() else None}")
    print("| task | batch | precision | steps/s | samples/s |")
    print("| --- | ---: | --- | ---: | ---: |")
    for task in args.tasks:
        _, _, batch, unit, warmup, steps = TASKS[task]
        for precision in ("32-true", "bf16-mixed"):
            extra = (f"--trainer.accelerator={args.accelerator}", "--trainer.devices=1", f"--trainer.precision={precision}")
            with tempfile.TemporaryDirectory() as folder:
                seconds = statistics.median(port(task, batch, warmup, steps, folder, extra) for _ in range(args.rounds))
            per_step = batch * (50 if task == "shakespeare" else 1)
            print(f"| {task} | {batch} | {precision} | {1 / seconds:.1f} | {per_step / seconds:,.0f} {unit} |", flush=True)
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    accelerator = (f"--trainer.accelerator={args.accelerator}", "--trainer.devices=1")
    # The non-finite guard's check on the device (the default on a GPU: non_finite.check auto) and on the host.
    print("\n| task | batch | port ms/step | port, host check | bare ms/step | framework cost (ms) | port/bare |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task in [t for t in ("sine", "adding") if t in args.tasks]:
        _, batch, _, _, warmup, steps = TASKS[task]
        times: dict[str, list[float]] = {"port": [], "host": [], "bare": []}
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.rounds):  # interleaved
                with contextlib.redirect_stdout(io.StringIO()):
                    times["port"].append(port(task, batch, warmup, steps, folder, accelerator))
                    times["host"].append(port(task, batch, warmup, steps, folder, (*accelerator, "--non_finite.check=host")))
                times["bare"].append(bare(task, batch, warmup, steps, folder, device))
        ported, host, plain = (statistics.median(times[name]) * 1e3 for name in ("port", "host", "bare"))
        print(f"| {task} | {batch} | {ported:.2f} | {host:.2f} | {plain:.2f} | {ported - plain:.2f} | {plain / ported:.2f} |",
              flush=True)
    print("\n| run | seconds (fit, as a user runs it) |")
    print("| --- | ---: |")
    for run in args.runs:
        with tempfile.TemporaryDirectory() as folder:
            seconds = statistics.median(runs.port(run, folder, accelerator) for _ in range(args.rounds))
        print(f"| {run} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
