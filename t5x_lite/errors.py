"""The user-facing error of the configuration, defined at the bottom so every layer can raise it.

`t5x_lite.config.ConfigError` is this class (re-exported there, where users look for it).
"""


class ConfigError(ValueError):
  """A config value is missing, of the wrong type, or inconsistent with another."""
