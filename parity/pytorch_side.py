"""The PyTorch side of the parity harness: an lstm_pl run built from its YAML exactly as
``python -m lstm_pl fit`` builds it (LightningCLI: the same DataModule, LightningModule, optimizer
and Trainer clipping), trained by the Trainer, and recorded step by step for TensorFlow to replay:
the initial weights, every batch as the model received it, every step's loss, and the final
validation loss with its batches."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from torchmetrics import Metric

from lstm_pl.cells import recurrent_layers
from lstm_pl.cli import CLI
from lstm_pl.errors import ConfigError

PRECISION = {"float32": "32-true", "float64": "64-true"}
KINDS = {"RegressionTask": "regression", "LanguageModelTask": "language_model"}
TWO_BIASES = ("model.init: with init: torch, nn.LSTM and nn.RNN train two biases per gate (bias_ih and bias_hh, "
              "each moved by Adam) where TensorFlow trains one, so no TensorFlow run can follow; compare with init: tf1")


@dataclass
class Recording:
    """One PyTorch training run, as TensorFlow needs it (numpy arrays and plain numbers only)."""

    spec: dict                  # the network, described from the config: kind, cell, sizes, ...
    optimizer: dict             # lr, betas, eps of the Adam the LightningModule configured
    clip: dict | None           # the Trainer's gradient clipping: value, algorithm ("norm" / "value")
    weights: dict               # the initial weights, in Keras' layout (see keras_layout)
    batches: list = field(default_factory=list)      # (x, y) per step, in order
    epochs: list = field(default_factory=list)       # the epoch of each step
    losses: list = field(default_factory=list)       # the training loss of each step (before its update)
    val_batches: list = field(default_factory=list)  # the final validation's (x, y), in order
    val_loss: float = float("nan")
    seconds: float = 0.0


def read_yaml(config: str) -> dict:
    return yaml.safe_load(Path(config).read_text()) or {}


def task_kind(config: str) -> str:
    """``regression`` or ``language_model``, from the config's ``model.class_path``."""
    class_path = read_yaml(config).get("model", {}).get("class_path", "")
    kind = KINDS.get(class_path.rsplit(".", 1)[-1])
    if kind is None:
        raise ConfigError(f"model.class_path: {class_path!r} has no TensorFlow counterpart in the parity harness "
                          f"(known: {', '.join(KINDS)})")
    return kind


def keras_layout(net: torch.nn.Module) -> tuple[dict, set[int]]:
    """The network's weights in Keras' layout, with the ids of the parameters they came from.

    The mapping (measured: with it, every cell's float64 run matches TensorFlow's to rounding from
    the first step on; tests/test_parity.py):
        recurrent layer:  kernel = weight_ihᵀ (F, G·H),  recurrent_kernel = weight_hhᵀ (H, G·H),
                          bias = bias_ih + bias_hh (G·H),  peephole (3, H) as is;
                          gate blocks i, f, g, o in both (Keras: i, f, c, o), no f in lstm_cec
        Dense:            kernel = weightᵀ (H, out),  bias = bias
        Embedding:        embeddings = weight (V, E)
    """
    used: set[int] = set()

    def take(*parameters):
        used.update(id(p) for p in parameters if p is not None)
        return [None if p is None else p.detach().cpu().numpy().copy() for p in parameters]

    layers = []
    for layer in recurrent_layers(net.rnn):
        if layer["bias_hh"] is not None and layer["bias_hh"].requires_grad:
            raise ConfigError(TWO_BIASES)
        w_ih, w_hh, b, b_hh, peephole = take(layer["weight_ih"], layer["weight_hh"], layer["bias"], layer["bias_hh"],
                                             layer["peephole"])
        layers.append(dict(kernel=w_ih.T.copy(), recurrent_kernel=w_hh.T.copy(),
                           bias=b if b_hh is None else b + b_hh, peephole=peephole))
    weights = dict(recurrent=layers)
    output = net.head if hasattr(net, "head") else net.decoder
    weight, bias = take(output.weight, output.bias)
    weights["dense"] = dict(kernel=weight.T.copy(), bias=bias)
    if hasattr(net, "embedding"):
        weights["embedding"] = take(net.embedding.weight)[0]
    return weights, used


class Recorder(pl.Callback):
    """Records what the Trainer feeds and computes: the initial weights when training starts, each
    step's batch (after the precision plugin's cast: what the model received), epoch and loss,
    and the batches of validation."""

    def __init__(self):
        self.weights, self.optimizer, self.batches, self.epochs, self.losses, self.val_batches = None, None, [], [], [], []

    def on_train_start(self, trainer, pl_module):
        self.optimizer = optimizer_settings(trainer)
        self.weights, used = keras_layout(pl_module.net)
        unmapped = [name for name, p in pl_module.named_parameters() if p.requires_grad and id(p) not in used]
        if unmapped:
            raise ConfigError(f"model: no TensorFlow counterpart for the parameters {', '.join(unmapped)}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(tuple(t.detach().cpu().numpy().copy() for t in batch))
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_validation_start(self, trainer, pl_module):
        # torchmetrics keeps float32 states (and casts its inputs to float32) unless told: accumulate
        # the validation loss at the compared dtype. Here, after the Trainer has moved the model,
        # which resets a metric's dtype to the default one.
        for metric in pl_module.modules():
            if isinstance(metric, Metric):
                metric.set_dtype(pl_module.dtype)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_batches.append(tuple(t.detach().cpu().numpy().copy() for t in batch))


def describe(cli: CLI, kind: str) -> dict:
    """The network as the config describes it (the data fills in what the config leaves null)."""
    args = cli.config["model"]["init_args"].as_dict()
    spec = dict(kind=kind, cell=args["cell"], hidden_size=args["hidden_size"], num_layers=args["num_layers"])
    if kind == "regression":
        spec.update(input_size=args["input_size"], output_size=args["output_size"])
    else:
        spec.update(vocab_size=args["vocab_size"] or cli.datamodule.vocab_size, embedding_size=args["embedding_size"],
                    tie_weights=args["tie_weights"], stateful=args["stateful"])
    return spec


def check_comparable(cli: CLI) -> None:
    """Refuse, in one line naming the key, what no TensorFlow run could follow step for step."""
    args = cli.config["model"]["init_args"].as_dict()
    if args.get("init") == "torch" and args.get("cell") in ("lstm", "rnn"):
        raise ConfigError(TWO_BIASES)
    if args.get("dropout", 0.0) > 0.0:
        raise ConfigError(f"model.dropout is {args['dropout']}: dropout masks are random draws that TensorFlow cannot "
                          f"share; compare with --model.init_args.dropout=0")
    if cli.trainer.accumulate_grad_batches != 1:
        raise ConfigError("trainer.accumulate_grad_batches must be 1 for a step-by-step comparison")


def clipping(trainer: pl.Trainer) -> dict | None:
    """The Trainer's gradient clipping: ``gradient_clip_val`` and ``gradient_clip_algorithm``."""
    if trainer.gradient_clip_val is None:
        return None
    algorithm = trainer.gradient_clip_algorithm
    return dict(value=float(trainer.gradient_clip_val), algorithm=str(getattr(algorithm, "value", algorithm) or "norm"))


def optimizer_settings(trainer: pl.Trainer) -> dict:
    """lr, betas and eps of the one plain Adam the LightningModule configured (anything else refused)."""
    if len(trainer.optimizers) != 1 or type(trainer.optimizers[0]) is not torch.optim.Adam:
        raise ConfigError("model: the parity harness follows one torch.optim.Adam; this task configures "
                          f"{[type(o).__name__ for o in trainer.optimizers]}")
    if trainer.lr_scheduler_configs:
        raise ConfigError("model: the parity harness does not follow learning-rate schedulers")
    groups = trainer.optimizers[0].param_groups
    group = groups[0]
    if len(groups) != 1 or group["weight_decay"] or group["amsgrad"] or group["maximize"]:
        raise ConfigError("model: the parity harness follows plain Adam (one parameter group, no weight decay, "
                          "no amsgrad)")
    return dict(lr=float(group["lr"]), betas=[float(b) for b in group["betas"]], eps=float(group["eps"]))


def record(config: str, dtype: str, steps: int | None, folder: Path, overrides: list[str] = (),
           exact: bool = True, threads: int = 1) -> Recording:
    """Train ``config`` with PyTorch Lightning in ``dtype`` on the CPU for ``steps`` optimizer steps
    (``exact``: that many, beyond the config's epochs if need be; else at most that many, stopping
    earlier where the config's budget ends; None: the config's budget), recording everything
    TensorFlow needs to replay the run.

    The Trainer is the CLI's, with what writes files or draws figures switched off (logger,
    callbacks, checkpoints; their files would go to ``folder``), and validation moved to the end:
    one pass after training gives the final validation loss. PyTorch runs on ``threads`` CPU
    threads (restored afterwards): one is fastest for these small models, and on a shared machine
    more threads spin against each other's load (10-40x slower measured on 2 busy cores).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _record(config, dtype, steps, folder, list(overrides), exact)
    finally:
        torch.set_num_threads(previous_threads)


def _record(config: str, dtype: str, steps: int | None, folder: Path, overrides: list[str], exact: bool) -> Recording:
    start = time.perf_counter()
    kind = task_kind(config)
    args = ["--config", config, *overrides, "--trainer.logger=false", "--trainer.callbacks=[]",
            f"--trainer.default_root_dir={folder}", "--trainer.accelerator=cpu", "--trainer.devices=1",
            f"--trainer.precision={PRECISION[dtype]}", "--trainer.enable_model_summary=false",
            "--trainer.enable_progress_bar=false"]
    if steps is not None and not exact:
        configured = [int(o.split("=", 1)[1]) for o in overrides if o.startswith("--trainer.max_steps=")]
        budget = configured[-1] if configured else (read_yaml(config).get("trainer") or {}).get("max_steps")
        steps = min(steps, budget) if budget is not None and budget > 0 else steps
    if steps is not None:
        args += [f"--trainer.max_steps={steps}"] + (["--trainer.max_epochs=-1"] if exact else [])
    with warnings.catch_warnings():  # that args= is given while sys.argv holds the harness's own arguments
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        cli = CLI(args=args, run=False)
    check_comparable(cli)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    recorder = Recorder()
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)] + [recorder]
    limit_val_batches, trainer.limit_val_batches = trainer.limit_val_batches, 0
    trainer.num_sanity_val_steps = 0
    trainer.fit(model, datamodule=data)
    trainer.limit_val_batches = limit_val_batches
    val_loss = float(trainer.validate(model, datamodule=data, verbose=False)[0]["val/loss"])
    return Recording(spec=describe(cli, kind), optimizer=recorder.optimizer, clip=clipping(trainer),
                     weights=recorder.weights, batches=recorder.batches, epochs=recorder.epochs,
                     losses=recorder.losses, val_batches=recorder.val_batches, val_loss=val_loss,
                     seconds=time.perf_counter() - start)
