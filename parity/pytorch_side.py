"""The PyTorch side of the parity harness: an lstm_pl run built from its YAML exactly as
``python -m lstm_pl fit`` builds it (LightningCLI: the same DataModule, LightningModule and
optimizer), trained by a Trainer that keeps only what changes the arithmetic (budget, clipping,
precision), and recorded step by step for TensorFlow: the initial weights, every batch as the
model received it, every step's loss, and the final validation loss with its batches."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchmetrics import Metric

from lstm_pl.callbacks import LossCurves
from lstm_pl.cells import recurrent_layers
from lstm_pl.cli import CLI
from lstm_pl.data import AddingDataModule, SineDataModule
from lstm_pl.images import DigitsDataModule
from lstm_pl.errors import ConfigError
from lstm_pl.files import atomic_write
from lstm_pl.tasks import ClassificationTask, LanguageModelTask, RegressionTask
from lstm_pl.text import TextDataModule

from . import heap
from .recording import Recording

PRECISION = {"float32": "32-true", "float64": "64-true"}
KINDS = {RegressionTask: "regression", ClassificationTask: "classification", LanguageModelTask: "language_model"}
DATA_KINDS = {SineDataModule: "sine", AddingDataModule: "adding", DigitsDataModule: "digits", TextDataModule: "text"}
ADAM_FORMS = {"lstm_pl.optim.TFAdam": "tf", "torch.optim.Adam": "torch"}
BACKENDS = ("keras", "tf1")
# Without --steps, a comparison follows the config's own budget up to these many steps: all of it for
# sine and adding (500), the first 500 of adding_solve's 8,000. For the language models, 50 steps:
# their float64 steps take 1-3 s each on this CPU; 50 crosses the state reset at the start of the
# second epoch (an epoch of the shakespeare configs is 37 windows). The digits: 200 steps, about
# two and a half epochs of 81 batches of 16 (every batch checked against the TensorFlow side's own).
DEFAULT_STEPS = {"regression": 500, "classification": 200, "language_model": 50}


class NotComparable(ConfigError):
    """A config that the chosen TensorFlow backend cannot follow step for step (said in one line)."""


TWO_BIASES = ("model.init_args.net.single_bias: false leaves nn.LSTM / nn.RNN two biases per gate (bias_ih and "
              "bias_hh, each moved by Adam) where TensorFlow trains one, so no TensorFlow run can follow; compare "
              "with single_bias: true")


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
            raise NotComparable(TWO_BIASES)
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
        self.weights, self.batches, self.epochs, self.losses, self.val_batches = None, [], [], [], []

    def on_train_start(self, trainer, pl_module):
        self.weights, used = keras_layout(pl_module.net)
        unmapped = [name for name, p in pl_module.named_parameters() if p.requires_grad and id(p) not in used]
        if unmapped:
            raise NotComparable(f"model: no TensorFlow counterpart for the parameters {', '.join(unmapped)}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(tuple(t.detach().cpu().numpy().copy() for t in batch))
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        heap.release()  # freed memory back once the heap has grown by heap.GROWTH (parity/heap.py)

    def on_validation_start(self, trainer, pl_module):
        # torchmetrics keeps float32 states (and casts its inputs to float32) unless told: accumulate
        # the validation loss at the compared dtype. Here, after the Trainer has moved the model,
        # which resets a metric's dtype to the default one.
        for metric in pl_module.modules():
            if isinstance(metric, Metric):
                metric.set_dtype(pl_module.dtype)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_batches.append(tuple(t.detach().cpu().numpy().copy() for t in batch))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        heap.release()


def build(config: str, overrides: list[str]) -> CLI:
    """The run as ``python -m lstm_pl fit --config CONFIG OVERRIDES`` builds it, not started."""
    with warnings.catch_warnings():  # that args= is given while sys.argv holds the harness's own arguments
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        return CLI(args=["--config", config, *overrides], run=False, prog="parity")


def task_kind(cli: CLI) -> str:
    """``regression``, ``classification`` or ``language_model``, from the LightningModule the config built."""
    for task, kind in KINDS.items():
        if isinstance(cli.model, task):
            return kind
    raise NotComparable(f"model.class_path: {type(cli.model).__name__} has no TensorFlow counterpart in the parity "
                        f"harness (known: {', '.join(t.__name__ for t in KINDS)})")


def describe(cli: CLI, kind: str) -> dict:
    """The network as the parsed config describes it (the data's link included)."""
    net = cli.model.hparams.net
    net = dataclasses.asdict(net) if dataclasses.is_dataclass(net) else dict(net)
    spec = dict(kind=kind, cell=net["cell"], hidden_size=net["hidden_size"], num_layers=net["num_layers"],
                init=net["init"])
    if kind in ("regression", "classification"):
        spec.update(input_size=net["input_size"], output_size=net["output_size"], chrono_t_max=net["chrono_t_max"])
    else:
        spec.update(vocab_size=net["vocab_size"], embedding_size=net["embedding_size"], tie_weights=net["tie_weights"],
                    stateful=cli.model.hparams.stateful, dropout=net["dropout"],
                    uniform_init=net["uniform_init"],
                    regularisers={key: net.get(key, 0.0) for key in AWD_REGULARISERS if net.get(key, 0.0)},
                    learned_cache_window=net.get("learned_cache_window", 0))
    return spec


def describe_data(cli: CLI) -> dict:
    """The data as the parsed config describes it: its kind and the DataModule's settings."""
    for module, kind in DATA_KINDS.items():
        if isinstance(cli.datamodule, module):
            return dict(kind=kind, **cli.config.data.init_args.as_dict())
    raise NotComparable(f"data.class_path: {type(cli.datamodule).__name__} has no counterpart in the parity harness")


def optimizer_settings(cli: CLI) -> dict:
    """The config's Adam: its form (``tf``: lstm_pl.optim.TFAdam, TF1's; ``torch``:
    torch.optim.Adam), lr, betas and eps; anything else refused."""
    optimizer = cli.config.get("optimizer")
    form = ADAM_FORMS.get(getattr(optimizer, "class_path", None))
    if form is None:
        raise NotComparable(f"optimizer: the parity harness follows {' or '.join(ADAM_FORMS)}; this config has "
                            f"{getattr(optimizer, 'class_path', None)}")
    if cli.config.get("lr_scheduler") is not None:
        raise NotComparable("lr_scheduler: the parity harness does not follow learning-rate schedulers")
    args = optimizer.init_args
    if form == "torch" and (args.weight_decay or args.amsgrad or args.maximize):
        raise NotComparable("optimizer.init_args: the parity harness follows plain Adam (no weight decay, amsgrad, "
                            "maximize)")
    return dict(form=form, lr=float(args.lr), betas=[float(b) for b in args.betas], eps=float(args.eps))


# AWD-LSTM's regularisers (models.LanguageModelSettings): random masks TensorFlow cannot share, or
# penalties the Keras side does not add.
AWD_REGULARISERS = ("weight_drop", "embedding_dropout", "activation_penalty", "temporal_penalty")


def check_comparable(cli: CLI, spec: dict, optimizer: dict, backend: str, follow_torch_adam: bool) -> None:
    """Refuse, in one line naming the key, what the TensorFlow ``backend`` cannot follow step for step."""
    for key, value in spec.get("regularisers", {}).items():
        raise NotComparable(f"model.init_args.net.{key} is {value}: AWD-LSTM's regularisers are not in the "
                            f"TensorFlow side; compare with --model.init_args.net.{key}=0")
    if spec.get("learned_cache_window"):
        raise NotComparable(f"model.init_args.net.learned_cache_window is {spec['learned_cache_window']}: the learned "
                            f"cache is not in the TensorFlow side; compare with --model.init_args.net.learned_cache_window=0")
    averaging = cli.config.get("averaging") or {}
    for key in ("non_monotone", "start_epoch"):
        if averaging.get(key) is not None:
            raise NotComparable(f"averaging.{key} is {averaging[key]}: the TensorFlow side evaluates the weights it "
                                f"trains, not their average; compare with --averaging.{key}=null")
    if cli.config.data.init_args.get("variable_windows"):
        raise NotComparable("data.init_args.variable_windows is true: the TensorFlow side reads windows of seq_len; "
                            "compare with --data.init_args.variable_windows=false")
    if spec.get("dropout", 0.0) > 0.0:
        raise NotComparable(f"model.init_args.net.dropout is {spec['dropout']}: dropout masks are random draws that "
                            f"TensorFlow cannot share; compare with --model.init_args.net.dropout=0")
    if spec.get("uniform_init") is not None:
        raise NotComparable(f"model.init_args.net.uniform_init is {spec['uniform_init']}: the TensorFlow side draws "
                            f"the cookbook's initialisers (init: tf1 or torch); compare without it")
    if cli.config.trainer.accumulate_grad_batches != 1:
        raise NotComparable("trainer.accumulate_grad_batches must be 1 for a step-by-step comparison")
    if backend == "tf1":
        if importlib.util.find_spec("tf_keras") is None:
            raise NotComparable("--tensorflow tf1 needs the tf_keras package (TF1's RNN cells): "
                                "pip install --no-deps tf_keras==2.21.0")
        if spec["kind"] != "regression" or spec["cell"] not in ("lstm", "rnn") or spec["num_layers"] != 1:
            raise NotComparable(f"--tensorflow tf1 rebuilds the original programs (one LSTMCell or BasicRNNCell layer "
                                f"on sine or adding); this config has {spec['kind']}, cell {spec['cell']}, "
                                f"{spec['num_layers']} layers: use --tensorflow keras")
        if optimizer["form"] != "tf":
            raise NotComparable("optimizer: --tensorflow tf1 runs tf.train.AdamOptimizer; the config must choose "
                                "lstm_pl.optim.TFAdam")
        if cli.config.trainer.gradient_clip_val is not None:
            raise NotComparable("trainer.gradient_clip_val: the original programs do not clip; use --tensorflow keras")
    if optimizer["form"] == "torch" and not follow_torch_adam:
        raise NotComparable("optimizer: torch.optim.Adam (ε added to the bias-corrected root) is not an update "
                            "TensorFlow has; compare with lstm_pl.optim.TFAdam, or pass "
                            "--tensorflow-follows-pytorch-adam to make TensorFlow follow PyTorch")


def clipping(cli: CLI) -> dict | None:
    """The config's gradient clipping: ``gradient_clip_val`` and ``gradient_clip_algorithm``."""
    trainer = cli.config.trainer
    if trainer.gradient_clip_val is None:
        return None
    return dict(value=float(trainer.gradient_clip_val), algorithm=str(trainer.gradient_clip_algorithm or "norm"))


def stripped_trainer(cli: CLI, kind: str, dtype: str, steps: int | None, folder: Path, recorder: Recorder) -> pl.Trainer:
    """A Trainer with the config's budget and clipping, on the CPU in ``dtype``, without what writes
    files or draws figures (logger, checkpoints, callbacks), validating once, after training.
    ``steps``: exactly that many optimizer steps; 0: the config's whole budget; None: the config's
    budget, at most ``DEFAULT_STEPS``."""
    config = cli.config.trainer
    if steps == 0:
        max_steps, max_epochs = config.max_steps, config.max_epochs
    elif steps is None:
        budget = config.max_steps if config.max_steps and config.max_steps > 0 else None
        max_steps = min(budget or DEFAULT_STEPS[kind], DEFAULT_STEPS[kind])
        max_epochs = config.max_epochs
    else:
        max_steps, max_epochs = steps, -1
    clip = clipping(cli)
    return pl.Trainer(accelerator="cpu", devices=1, precision=PRECISION[dtype], logger=False, enable_checkpointing=False,
                      callbacks=[recorder], max_steps=max_steps, max_epochs=max_epochs,
                      limit_train_batches=config.limit_train_batches, limit_val_batches=0, num_sanity_val_steps=0,
                      gradient_clip_val=None if clip is None else clip["value"],
                      gradient_clip_algorithm=None if clip is None else clip["algorithm"],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=folder)


def record(config: str, dtype: str, steps: int | None, folder: Path, overrides: list[str] = (),
           threads: int = 1, backend: str = "keras", follow_torch_adam: bool = False) -> Recording:
    """Train ``config`` (with ``overrides``) in ``dtype`` on the CPU for ``steps`` optimizer steps
    (None: the config's budget, capped; see ``stripped_trainer``), recording everything TensorFlow
    needs; refuse first (``NotComparable``) what the TensorFlow ``backend`` cannot follow. PyTorch
    runs on ``threads`` CPU threads (restored afterwards): one is fastest for these small models,
    and on a shared machine more threads spin against each other's load."""
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cli = build(config, list(overrides))
        with atomic_write(folder / "config.yaml") as partial:
            partial.write_text(cli.parser.dump(cli.config, skip_none=False))
        kind = task_kind(cli)
        spec, data, optimizer = describe(cli, kind), describe_data(cli), optimizer_settings(cli)
        check_comparable(cli, spec, optimizer, backend, follow_torch_adam)
        recorder = Recorder()
        trainer = stripped_trainer(cli, kind, dtype, steps, folder, recorder)
        # The run's own after-update curve (the original's), recorded by the config's LossCurves
        # itself, at the config's log_every_n_steps: what is compared is what the run draws.
        # A copy, so that the config's own callback object stays as configured; not drawn.
        curves = next((c for c in cli.trainer.callbacks if isinstance(c, LossCurves) and c.after_update), None)
        if curves is not None:
            curves = copy.copy(curves)
            curves.figure = False
            trainer.callbacks.append(curves)
            trainer.log_every_n_steps = cli.trainer.log_every_n_steps
        trainer.fit(cli.model, datamodule=cli.datamodule)
        trainer.limit_val_batches = cli.config.trainer.limit_val_batches or 1.0
        val_loss = float(trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/loss"])
    finally:
        torch.set_num_threads(previous_threads)
    return Recording(spec=spec, data=data, optimizer=optimizer, clip=clipping(cli), weights=recorder.weights,
                     batches=recorder.batches, epochs=recorder.epochs, losses=recorder.losses,
                     val_batches=recorder.val_batches, val_loss=val_loss, seconds=time.perf_counter() - start,
                     config=cli.config.clone().as_dict(), planned_steps=trainer.max_steps,
                     after_update_steps=[step for step, _ in curves.train] if curves else [],
                     losses_after_update=[float(loss) for _, loss in curves.train] if curves else [])
