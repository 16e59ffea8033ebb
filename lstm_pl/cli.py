"""``python -m lstm_pl {fit,validate,test,predict} --config configs/TASK.yaml``: LightningCLI, with
the model, the DataModule and the optimizer chosen in the YAML (``class_path`` / ``init_args``).

``configs/base.yaml`` is read first, for every subcommand (what every run shares: seed, logger,
checkpointing, optimizer); a task config sets the rest, and a variant starts with
``config: <task>.yaml`` and says only what differs. What the data determines (features per step, vocabulary size) flows to the model by
``link_arguments``, never back.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from pathlib import Path

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .errors import ConfigError

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

    def error(self, message: str, ex: Exception | None = None):  # noqa: D102 - jsonargparse's hook
        name = (self.prog or "lstm_pl").split()[0].replace("__main__.py", "lstm_pl")
        sys.stderr.write(f"{name}: error: {one_line(message, OneLineErrorParser.command_line)}\n")
        sys.exit(2)


class CLI(LightningCLI):
    """LightningCLI with the project's parser, a ``checkpoint:`` group (``ModelCheckpoint``, set in
    ``configs/base.yaml``) and the data-to-model links."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        OneLineErrorParser.command_line = list(sys.argv[1:] if args is None else args)
        base = {"default_config_files": [str(BASE_CONFIG)]}
        parser_kwargs = {name: base for name in SUBCOMMANDS} if run else base
        super().__init__(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         parser_class=OneLineErrorParser, parser_kwargs=parser_kwargs, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Applied after the DataModule exists, each only where both ends have the attribute.
        parser.link_arguments("data.input_size", "model.init_args.net.input_size", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.init_args.net.vocab_size", apply_on="instantiate")


def config_error(error: BaseException | None) -> ConfigError | None:
    """The ``ConfigError`` behind ``error``, if any (jsonargparse wraps what ``__init__`` raises)."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    return error


def quiet_start() -> None:
    """What the command line sets up before it starts (never at import):
    - TensorBoard's writer imports all of TensorFlow when it is installed (it is, for the parity
      harness), costing seconds and a screen of log lines; writing event files needs none of it,
      and the module TensorBoard's own no-TensorFlow build provides selects its stub instead;
    - "Seed set to N" would come before a config error's one line (the seed is in config.yaml)."""
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)


def main(args: list[str] | None = None) -> None:
    quiet_start()
    try:
        CLI(args=args)
    except Exception as error:
        cause = config_error(error)
        if cause is None:
            raise
        sys.stderr.write(f"lstm_pl: error: {cause}\n")
        sys.exit(2)
