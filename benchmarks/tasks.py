"""Training throughput of every task, side by side: the port through the Lightning Trainer, a bare
PyTorch loop over the same model, batches and optimizer, and TensorFlow on the same network.

    OMP_NUM_THREADS=1 python -m benchmarks.tasks [--tasks sine adding shakespeare] [--rounds 3]

For each task, at the original's batch size and at a large one: optimizer steps per second and
samples (windows, sequences or tokens) per second of each contender, the median of ``--rounds``
rounds after a warm-up, the contenders interleaved round by round so that load from other
processes falls on all of them alike; then the ratios port/bare and port/TensorFlow (above 1:
the port is faster).

- ``port``: ``trainer.fit`` of the config as a user runs it (a fresh CLI-built run each round:
  TensorBoard logging every ``log_every_n_steps``, checkpointing, the non-finite guard), with
  validation and figures off so that training alone is timed, from the first step after the
  warm-up to the end of the last.
- ``bare``: ``zero_grad(); loss(net(x), y).backward(); step()`` over the same network, the
  optimizer the config builds, and the DataModule's own batches (clipping where the config clips).
- ``tensorflow``: the parity harness's Keras network of the same sizes and its train step (TF1's
  Adam, or PyTorch's formula where the config chooses PyTorch's Adam), as a ``tf.function`` and
  XLA-compiled (``jit_compile=True``); the faster of the two is reported, by name.

Everything runs on one CPU thread (PyTorch and TensorFlow). Peak memory is the process's maximum
resident set size once the task is done (the contenders share the process, so it is their
maximum). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

import numpy as np
import pytorch_lightning as pl
import torch

from lstm_pl import runtime
from lstm_pl.cli import CLI
from parity import pytorch_side

# task: (config, the original's batch, a large batch, what a sample is, warm-up steps, timed steps)
TASKS = {
    "sine": ("sine", 10, 256, "windows", 20, 150),
    "adding": ("adding", 10, 256, "sequences", 3, 15),
    "shakespeare": ("shakespeare", 100, 400, "tokens", 2, 8),
    # pytorch/examples' 2x200 model and recipe (SGD, dropout 0.2, clip 0.25) at its batch of 20 and at 80.
    "lm_examples": ("shakespeare_examples", 20, 80, "tokens", 5, 40),
}


class StepClock(pl.Callback):
    """Wall time from the start of step ``warmup + 1`` to the end of the last step (on a GPU, after
    the queued work is done)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def training_only(steps: int, folder: str) -> list[str]:
    """Overrides that make a config's run train ``steps`` steps and do nothing else: no validation
    (nor a schedule that reads it), figures, checkpoint by a metric or model summary; its logs in
    ``folder``."""
    return [f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", f"--trainer.logger.init_args.save_dir={folder}",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.callbacks=[]",
            "--trainer.enable_model_summary=false", "--checkpoint.monitor=null",
            "--lr_scheduler=null"]  # a plateau schedule reads val/loss, which the timing switches off


def build(task: str, batch: int, steps: int, folder: str, extra: tuple[str, ...] = ()) -> CLI:
    """The task's run as the CLI builds it, at ``batch``, for ``steps`` steps, training only
    (``extra``: more overrides, e.g. the accelerator and precision)."""
    overrides = [*extra, f"--data.init_args.batch_size={batch}", *training_only(steps, folder)]
    return pytorch_side.build(f"configs/{TASKS[task][0]}.yaml", overrides)


def training_batches(cli: CLI, count: int) -> list:
    """``count`` training batches of the DataModule, in order, over as many passes as it takes
    (the language model's full-length windows only: a shorter last window would make TensorFlow
    trace its step again, inside the timing)."""
    cli.datamodule.setup("fit")
    window = getattr(cli.datamodule, "seq_len", None)
    batches: list = []
    while len(batches) < count:
        for x, y in cli.datamodule.train_dataloader():
            if window is None or x.shape[-1] == window:
                batches.append((x, y))
            if len(batches) == count:
                break
    return batches


def timed_fit(cli: CLI, warmup: int, steps: int) -> float:
    """Seconds per step of ``cli``'s ``trainer.fit`` over its ``warmup + steps`` steps, the first
    ``warmup`` untimed."""
    clock = StepClock(warmup)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return (clock.end - clock.start) / steps


def port(task: str, batch: int, warmup: int, steps: int, folder: str, extra: tuple[str, ...] = ()) -> float:
    """Seconds per step of ``trainer.fit``."""
    return timed_fit(build(task, batch, warmup + steps, folder, extra), warmup, steps)


def bare(task: str, batch: int, warmup: int, steps: int, folder: str, device: str = "cpu") -> float:
    """Seconds per step of a plain PyTorch loop over the same network, optimizer and batches (on
    ``device``, the batches moved there before the timing, as the port's loader pins nothing)."""
    cli = build(task, batch, warmup + steps, folder)
    net, clip = cli.model.net.to(device), cli.config.trainer.gradient_clip_val
    optimizer = cli.model.configure_optimizers()  # the config's optimizer, as LightningCLI built it
    state = None
    batches = [(x.to(device), y.to(device)) for x, y in training_batches(cli, warmup + steps)]
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step, (x, y) in enumerate(batches):
        if step == warmup:
            synchronize()
            start = time.perf_counter()
        optimizer.zero_grad()
        if hasattr(net, "embedding"):  # a language model: the state carried, cut from the graph
            logits, state = net(x, state)
            state = tuple(part.detach() for part in state)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
    synchronize()
    return (time.perf_counter() - start) / steps


def tensorflow(task: str, batch: int, warmup: int, steps: int, folder: str, jit_compile: bool) -> float:
    """Seconds per step of the Keras network's ``tf.function`` train step (XLA with ``jit_compile``)."""
    import tensorflow as tf

    from parity import tensorflow_side

    cli = build(task, batch, warmup + steps, folder)
    kind = pytorch_side.task_kind(cli)
    spec = pytorch_side.describe(cli, kind)
    batches = [(x.numpy(), y.numpy()) for x, y in training_batches(cli, warmup + steps)]
    net = tensorflow_side.Network(spec, "float32")
    state = net.zero_state(batches[0][0].shape[0])
    net(tf.convert_to_tensor(batches[0][0]), state)
    train_step = tensorflow_side.make_train_step(net, pytorch_side.optimizer_settings(cli),
                                                 pytorch_side.clipping(cli), jit_compile=jit_compile)
    for step, (x, y) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        loss, state = train_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y), state)
    float(loss)  # wait for the last step
    return (time.perf_counter() - start) / steps


def measure(task: str, batch: int, rounds: int, folder: str) -> dict:
    """Median seconds per step of each contender, interleaved round by round."""
    _, _, _, _, warmup, steps = TASKS[task]
    contenders = {"port": lambda: port(task, batch, warmup, steps, folder),
                  "bare": lambda: bare(task, batch, warmup, steps, folder),
                  "tf.function": lambda: tensorflow(task, batch, warmup, steps, folder, False),
                  "XLA": lambda: tensorflow(task, batch, warmup, steps, folder, True)}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            try:
                times[name].append(run())
            except Exception as error:  # noqa: BLE001 - XLA cannot compile every graph: said in the table
                times[name].append(float("nan"))
                print(f"# {task} batch {batch}: {name} failed: {type(error).__name__}: {str(error)[:120]}", flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def one_thread_each() -> None:
    """The process set up as every entry point is, PyTorch and TensorFlow on one CPU thread each."""
    runtime.start()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    torch.set_num_threads(1)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one_thread_each()
    print("| task | batch | port steps/s | samples/s (port) | bare steps/s | TF best (steps/s) | port/bare | "
          "port/TF | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for task in args.tasks:
        config, original, large, unit, _, _ = TASKS[task]
        for batch in (original, large):
            with tempfile.TemporaryDirectory() as folder:
                seconds = measure(task, batch, args.rounds, folder)
                window = getattr(build(task, batch, 1, folder).datamodule, "seq_len", 1)  # tokens per sample
            tf_name = min(("tf.function", "XLA"), key=lambda n: seconds[n] if np.isfinite(seconds[n]) else np.inf)
            per_sample = batch * window
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {task} | {batch} | {1 / seconds['port']:.1f} | {per_sample / seconds['port']:,.0f} {unit} | "
                  f"{1 / seconds['bare']:.1f} | {tf_name} {1 / seconds[tf_name]:.1f} | "
                  f"{seconds['bare'] / seconds['port']:.2f} | {seconds[tf_name] / seconds['port']:.2f} | "
                  f"{rss:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
