"""Where the framework's cost per step goes (issue 23's target: port minus bare at most 0.3 ms on
sine at batch 10), by taking the port apart one layer at a time:

    OMP_NUM_THREADS=1 python -m benchmarks.framework [--task sine] [--batch 10] [--rounds 3]

- ``bare``: ``benchmarks.tasks.bare``, a plain PyTorch loop over the network, optimizer and batches;
- ``Lightning``: Lightning's own loop around the same network, optimizer and batches, with nothing
  of this project's: a minimal ``LightningModule`` (``training_step`` returns the loss), no logger,
  no callbacks, checkpointing or progress bar, the batches handed over as a plain iterable;
- ``Lightning, barebones``: the same with ``Trainer(barebones=True)``, Lightning's own switch for
  measuring its loop's overhead: off, every feature it names as costing speed (the logger,
  ``log_every_n_steps``, ``self.log``, checkpointing, progress bar, summary, profiler);
- ``Lightning, manual optimization``: the same module with ``automatic_optimization = False``, its
  ``training_step`` calling ``zero_grad``, ``manual_backward`` and ``step`` itself (no closure);
- ``+ DataLoader``: ``Lightning``, the batches from the task's DataModule (its ``DataLoader`` and sampler);
- ``port``: ``benchmarks.tasks.port``, the config as a user runs it, training only (its Task, the
  logger, the training-loss recorder, the non-finite guard, the checkpoint and report callbacks).

Milliseconds per step, the median of ``--rounds`` interleaved rounds (each a fresh run, 1,000 timed
steps after 100), each layer's cost over the one before it (the two variants of Lightning's loop:
over ``Lightning``), and over bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import pytorch_lightning as pl
import torch

from benchmarks.tasks import StepClock, bare, build, one_thread_each, port, training_batches


class Minimal(pl.LightningModule):
    """The least a LightningModule needs to train ``net`` with ``optimizer``: the loss, returned."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer):
        super().__init__()
        self.net, self.optimizer = net, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer


class ManualMinimal(Minimal):
    """``Minimal`` under manual optimization: the step's zero_grad, backward and update by hand."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer):
        super().__init__(net, optimizer)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        optimizer.step()
        return loss


class Batches:
    """A plain iterable of ready batches (a list would be taken for several loaders)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def lightning(task: str, batch: int, warmup: int, steps: int, folder: str, datamodule: bool = False,
              variant: str = "") -> float:
    """Seconds per step of Lightning's loop alone around the task's network, optimizer and batches
    (``variant``: ``barebones`` or ``manual``, see the module)."""
    cli = build(task, batch, warmup + steps, folder)
    module = (ManualMinimal if variant == "manual" else Minimal)(cli.model.net, cli.model.configure_optimizers())
    clock = StepClock(warmup)
    quiet = (dict(barebones=True) if variant == "barebones" else
             dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False))
    trainer = pl.Trainer(max_steps=warmup + steps, max_epochs=-1, callbacks=[clock], limit_val_batches=0,
                         num_sanity_val_steps=0, accelerator="cpu", devices=1, **quiet)
    if datamodule:
        trainer.fit(module, datamodule=cli.datamodule)
    else:
        trainer.fit(module, train_dataloaders=Batches(training_batches(cli, warmup + steps)))
    return (clock.end - clock.start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sine", choices=["sine", "adding"])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    one_thread_each()
    warmup, steps = 100, args.steps
    layers = {"bare": lambda folder: bare(args.task, args.batch, warmup, steps, folder),
              "Lightning": lambda folder: lightning(args.task, args.batch, warmup, steps, folder),
              "Lightning, barebones": lambda folder: lightning(args.task, args.batch, warmup, steps, folder,
                                                               variant="barebones"),
              "Lightning, manual optimization": lambda folder: lightning(args.task, args.batch, warmup, steps, folder,
                                                                         variant="manual"),
              "+ DataLoader": lambda folder: lightning(args.task, args.batch, warmup, steps, folder, datamodule=True),
              "port": lambda folder: port(args.task, args.batch, warmup, steps, folder)}
    times: dict[str, list[float]] = {name: [] for name in layers}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name, layer in layers.items():
                times[name].append(layer(folder))
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(f"| {args.task}, batch {args.batch} | ms/step | over the line above | over bare |")
    print("| --- | ---: | ---: | ---: |")
    previous = None
    for name, value in medians.items():
        variant = name.startswith("Lightning, ")  # compared with Lightning's loop, not the line above
        above = "" if previous is None else f"{value - (medians['Lightning'] if variant else previous):+.3f}"
        print(f"| {name} | {value:.3f} | {above} | {value - medians['bare']:+.3f} |")
        if not variant:
            previous = value


if __name__ == "__main__":
    main()
