"""The one error a bad configuration raises; the CLI prints it as a single line."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the offending key."""
