"""The errors lstm_pl reports as a single line (``cli.main``), naming the key or file and what to do."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the offending key."""


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message names the step and what to do."""


def cause(error: BaseException | None, kinds: type | tuple[type, ...] = ConfigError) -> BaseException | None:
    """The error of one of ``kinds`` behind ``error``, if any (jsonargparse and Lightning wrap what
    a constructor or a hook raises)."""
    while error is not None and not isinstance(error, kinds):
        error = error.__cause__ or error.__context__
    return error


def first_line(error: BaseException, limit: int | None = 160) -> str:
    """What ``error`` says, cut to its first line and ``limit`` characters (its type where it says nothing)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
