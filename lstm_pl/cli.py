"""``python -m lstm_pl {fit,validate,test,predict} --config configs/TASK.yaml``: LightningCLI, with
the model, the DataModule and the optimizer chosen in the YAML (``class_path`` / ``init_args``).

``configs/base.yaml`` is read first, for every subcommand (what every run shares: seed, logger,
checkpointing, optimizer); a task config sets the rest, and a variant starts with
``config: <task>.yaml`` and says only what differs. What the data determines (features per step,
vocabulary size) flows to the model by ``link_arguments``, never back.

A run that fails says so in one line and exits non-zero: 2 for bad input or a run that cannot go
on (naming the key or file), 143 after SIGTERM and 130 after SIGINT, having saved ``last.ckpt`` at
the step reached and printed the command that resumes it. ``fit --ckpt_path`` of a checkpoint in a
run folder continues that run: same folder, same TensorBoard run, the steps going on; ``validate``,
``test`` and ``predict`` of such a checkpoint write into ``<run>/<subcommand>/version_<n>``, so the
task's next fit keeps its version number.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from . import fused, runtime
from .averaging import WeightAveraging
from .cache import NeuralCache
from .dynamic import DynamicEvaluation
from .ensemble import Ensemble
from .checkpoints import Checkpoints, check_checkpoint_fits
from .console import Report, command_prefix
from .errors import ConfigError, TrainingError, cause, first_line
from .guards import NonFiniteLoss
from .scalars import TrainLoss
from .tasks import DATA_LINKS

log = logging.getLogger(__name__)

BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def one_line(message: str, args: list[str] = ()) -> str:
    """jsonargparse's nested error report as one line: the key as the user typed it
    (``model.init_args.net.hidden_size``; a key reported relative to its class is completed from
    the command-line override that set it), then the innermost reason."""
    lines = [line.strip().removeprefix("- ") for line in str(message).splitlines() if line.strip()]
    keyed = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r'Parser key "([^"]+)"', line))]
    if not keyed:
        return " ".join(lines[:2])
    last = keyed[-1][0]
    reason = lines[last + 1] if last + 1 < len(lines) else lines[last]
    key = ".init_args.".join(key for _, key in keyed)
    typed = [arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--")]
    return f"{next((t for t in typed if t.endswith('.' + key)), key)}: {reason}"


class OneLineErrorParser(LightningArgumentParser):
    """Reports bad input as one line naming the key, and exits 2, instead of usage plus a traceback."""

    command_line: list[str] = []  # what is being parsed, to name keys as typed

    def error(self, message: str, ex: Exception | None = None):  # jsonargparse's hook
        name = (self.prog or "lstm_pl").removeprefix("python -m ").split()[0].replace("__main__.py", "lstm_pl")
        line = one_line(message, OneLineErrorParser.command_line)
        if re.search(r"Option '[^']+' is not accepted", line):  # what a nested model:/data: mapping in a variant gives
            line += ("; in a config that starts from another (config: TASK.yaml), write each setting as one dotted "
                     "key, e.g. model.init_args.net.hidden_size: 30")
        sys.stderr.write(f"{name}: error: {line}\n")
        sys.exit(2)


class SaveRunConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml``, into the run folder; none for a run without a logger, which
    has no run folder: Lightning would write it into the working directory, over any file of that
    name there."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is None:
            return
        target = Path(trainer.log_dir or ".") / self.config_filename
        if target.is_dir():  # jsonargparse would say "File is not creatable since path already exists", in a traceback
            raise ConfigError(f"cannot write {target}: a directory is where the run's {self.config_filename} goes; "
                              f"move it away and run again (files written before are intact)")
        super().setup(trainer, pl_module, stage)


class CLI(LightningCLI):
    """LightningCLI with the project's parser, the ``checkpoint:`` (``checkpoints.Checkpoints``),
    ``non_finite:`` (``guards.NonFiniteLoss``), ``report:`` (``console.Report``), ``train_loss:``
    (``scalars.TrainLoss``) and ``averaging:`` (``averaging.WeightAveraging``) groups set in
    ``configs/base.yaml``, the
    data-to-model links, and the run-folder rules for ``--ckpt_path``."""

    latest: "CLI | None" = None  # the CLI whose classes were instantiated last (main reports on it)

    def __init__(self, args=None, run: bool = True, prog: str | None = None, **kwargs):
        """``prog``: the program its one-line errors name (a harness that builds runs, e.g. ``parity``)."""
        OneLineErrorParser.command_line = list(sys.argv[1:] if args is None else args)
        check_config_files(OneLineErrorParser.command_line)
        base = {"default_config_files": [str(BASE_CONFIG)], **({"prog": prog} if prog else {})}
        parser_kwargs = {name: base for name in SUBCOMMANDS} if run else base
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})  # a resumed run rewrites its config.yaml
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        super().__init__(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         parser_class=OneLineErrorParser, parser_kwargs=parser_kwargs, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoints, "checkpoint")
        parser.add_lightning_class_args(NonFiniteLoss, "non_finite")
        parser.add_lightning_class_args(Report, "report")
        parser.add_lightning_class_args(TrainLoss, "train_loss")
        parser.add_lightning_class_args(WeightAveraging, "averaging")
        parser.add_lightning_class_args(NeuralCache, "cache")
        parser.add_lightning_class_args(DynamicEvaluation, "dynamic_eval")
        parser.add_lightning_class_args(Ensemble, "ensemble")
        # Applied after the DataModule exists, each only where both ends have the attribute.
        for source, target in DATA_LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check ``--ckpt_path`` before anything reads it, and point a resumed fit at
        the run folder the checkpoint belongs to."""
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in (None, "last", "best", "hpc", "registry"):
            return
        check_checkpoint_fits(ckpt_path, config, resuming=self.config.get("subcommand") == "fit")
        run = Path(ckpt_path).resolve().parent.parent
        logger = config.trainer.get("logger")
        is_run_folder = Path(ckpt_path).resolve().parent.name == "checkpoints" and run.name.startswith("version_")
        if not is_run_folder or getattr(logger, "init_args", None) is None:
            return
        if self.config.get("subcommand") == "fit":
            logger.init_args.save_dir = str(run.parent.parent)
            logger.init_args.name = run.parent.name
            logger.init_args.version = int(run.name.removeprefix("version_"))
        elif logger.init_args.get("version") is None:  # validate/test/predict: <run>/<subcommand>/version_<n>
            logger.init_args.save_dir, logger.init_args.name = str(run), self.config.subcommand

    def before_instantiate_classes(self) -> None:
        """The run folder stays inside ``save_dir`` (``name`` and ``version`` are one folder name
        each) and must be writable before training starts (not at the first checkpoint)."""
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        for key, value in config.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}: {value} is not a finite number")
        interval = config.trainer.get("val_check_interval")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
            raise ConfigError(f"trainer.val_check_interval: {interval} must be a positive number of steps "
                              f"(or a fraction of an epoch)")
        if config.trainer.get("enable_progress_bar") is None:  # a bar on a terminal, else Report's lines
            config.trainer.enable_progress_bar = sys.stderr.isatty()
        logger = config.trainer.get("logger")
        init_args = getattr(logger, "init_args", None)
        for key in ("name", "version"):
            value = getattr(init_args, key, None)
            if isinstance(value, str) and (value in (".", "..") or any(sep in value for sep in "/\\")):
                raise ConfigError(f"trainer.logger.init_args.{key}: {value!r} must be one folder name inside "
                                  f"save_dir (no '/', no '..'); put the path into trainer.logger.init_args.save_dir")
        save_dir = getattr(init_args, "save_dir", None)
        if self.config.get("subcommand") == "fit" and save_dir is not None:
            try:
                Path(save_dir).mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=save_dir).close()
            except OSError as error:
                raise ConfigError(f"trainer.logger.init_args.save_dir: cannot write to {save_dir} "
                                  f"({error.strerror}); choose a writable folder") from None

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        scorers = [callback for callback in self.trainer.callbacks if isinstance(callback, (NeuralCache, DynamicEvaluation, Ensemble))]
        for scorer in scorers:
            scorer.check_model(self.model)
        # Lightning calls every callback's hooks at every step: a scorer that is off takes no part.
        self.trainer.callbacks = [c for c in self.trainer.callbacks if c not in scorers or c.active]
        CLI.latest = self

    @staticmethod
    def configure_optimizers(lightning_module: LightningModule, optimizer, lr_scheduler=None):
        """LightningCLI's optimizer and scheduler, stepped on the run's own clock: where validation
        runs every ``val_check_interval`` steps (``check_val_every_n_epoch: null``, the endless
        streams of sine and adding, which have no epoch end), a plateau scheduler steps after each
        validation (patience counts validations) and any other scheduler every step; elsewhere
        once an epoch, as LightningCLI does."""
        trainer = lightning_module.trainer
        warn_if_cosine_restarts(lr_scheduler, trainer)
        if lr_scheduler is None or trainer.check_val_every_n_epoch is not None:
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        plateau = isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        frequency = trainer.val_check_interval if plateau else 1
        if not isinstance(frequency, int):
            raise ConfigError("trainer.val_check_interval: a plateau scheduler on a step cadence "
                              "(check_val_every_n_epoch: null) needs a whole number of steps")
        scheduler = {"scheduler": lr_scheduler, "interval": "step", "frequency": frequency}
        if plateau:
            scheduler["monitor"] = lr_scheduler.monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def warn_if_cosine_restarts(lr_scheduler, trainer) -> None:
    """A cosine schedule whose half period (``T_max``, in the scheduler's steps: epochs, or steps on
    a step cadence) ends before the run does climbs back up from its floor: one warning (a set
    ``max_epochs`` or ``max_steps`` changed without ``T_max`` is the usual cause). A run without an
    end in that unit (-1) counts as longer; one that ``max_steps`` may end first, on an epoch
    cadence, is not judged (its epochs are not known yet)."""
    if not isinstance(lr_scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    by_epoch = trainer.check_val_every_n_epoch is not None
    if by_epoch and trainer.max_steps not in (None, -1):
        return
    unit, key = ("epochs", "max_epochs") if by_epoch else ("steps", "max_steps")
    length = getattr(trainer, key)
    if length in (None, -1) or length > lr_scheduler.T_max:
        log.warning("lstm_pl: lr_scheduler.init_args.T_max is %d %s, trainer.%s %s: the cosine rate climbs back "
                    "up after %s %d (set T_max to the run's length for one decay)", lr_scheduler.T_max, unit, key,
                    "-1 (no end)" if length in (None, -1) else length, unit[:-1], lr_scheduler.T_max)


def check_config_files(args: list[str]) -> None:
    """Each ``--config`` file named on the command line is a readable UTF-8 text (jsonargparse
    would fail on a binary one with a traceback)."""
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError(f"--config: cannot read {path} ({reason}); give a YAML config file") from None
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or first_line(error)
            raise ConfigError(f"--config: {path} is not valid YAML{where} ({problem})") from None
        if not isinstance(content, dict):  # jsonargparse: "Unexpected config: ...", no file named
            found = "empty" if content is None else f"a {type(content).__name__}, not a mapping"
            raise ConfigError(f"--config: {path} is {found}; a config is a mapping of settings (key: value)")


def known_failure(error: BaseException) -> str | None:
    """The one line for a failure that is the input's, found anywhere in ``error``'s chain: a
    setting Lightning refuses (no GPU for ``accelerator: gpu``), an optimizer's own check of its
    settings, memory a setting asks for and this machine has not."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    seen = error
    while seen is not None:
        text = first_line(seen, limit=None)
        if isinstance(seen, MisconfigurationException):
            return f"trainer: {text}"
        frames = []
        tb = seen.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        if isinstance(seen, ValueError) and frames and ("/torch/optim/" in frames[-1] or frames[-1].endswith("optim.py")):
            return f"optimizer.init_args: {text}"
        if isinstance(seen, (MemoryError, torch.OutOfMemoryError)) or (
                isinstance(seen, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)):
            return (f"out of memory ({text[:160]}); lower data.init_args.batch_size or the model's sizes "
                    f"(model.init_args.net.hidden_size)")
        if isinstance(seen, OverflowError) or (isinstance(seen, (RuntimeError, TypeError)) and "overflow" in text.lower()):
            return f"a size too large to allocate ({text[:160]}); check model.init_args.net and data.init_args.batch_size"
        seen = seen.__cause__ or seen.__context__
    return None


def resume_command(cli: CLI | None, argv: list[str]) -> str:
    """The command that resumes ``cli``'s run from its ``last.ckpt``."""
    if not argv or argv[0] != "fit":
        return "run it again"
    checkpoint = getattr(getattr(getattr(cli, "trainer", None), "checkpoint_callback", None), "last_model_path", "")
    if not checkpoint or not Path(checkpoint).is_file():
        return "no checkpoint was written; start it again"
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--ckpt_path"):
            skip = arg == "--ckpt_path"
            continue
        kept.append(arg)
    return f"resume with: {command_prefix()} -m lstm_pl " + shlex.join([*kept, f"--ckpt_path={checkpoint}"])


def main(args: list[str] | None = None) -> None:
    runtime.start()
    argv = list(sys.argv[1:] if args is None else args)
    received: list[int] = []
    CLI.latest = None  # this command's CLI, once it is built (an earlier one in this process is not it)

    def note(signum, frame):
        """Lightning adds its own SIGTERM handling on top of this one while it trains (a stop at the next
        step, with last.ckpt saved); before and after that, a SIGTERM stops here. Once a stop is under
        way, another signal does not break into its save."""
        received.append(signum)
        if len(received) > 1:
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signal.getsignal(signal.SIGTERM) is note:  # no Lightning handler (yet, or any more) acts on it
            raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        fused.lstm_setting()  # an unknown LSTM_PL_LSTM fails here, before a run folder is made
        CLI(args=args)
    except SystemExit:  # Lightning's SIGTERMException, or its sys.exit(1) after a KeyboardInterrupt
        if not received:
            raise
        name = signal.Signals(received[0]).name
        step = getattr(getattr(CLI.latest, "trainer", None), "global_step", "?")
        sys.stderr.write(f"lstm_pl: interrupted by {name} at step {step}; {resume_command(CLI.latest, argv)}\n")
        sys.exit(128 + received[0])
    except Exception as error:
        reason = cause(error, (ConfigError, TrainingError)) or known_failure(error)
        if reason is None and isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS,
                                                                             errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            reason = f"cannot write {error.filename or 'the run folder'} ({error.strerror}); files written before are intact"
        if reason is None:
            raise
        sys.stderr.write(f"lstm_pl: error: {reason}\n")
        sys.exit(2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
