"""The errors lstm_pl reports as a single line (``cli.main``), naming the key or file and what to do."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the offending key."""


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss); the message names the step and what to do."""
