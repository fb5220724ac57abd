"""Trainers, pipelines and the ``gesture`` command built on the gesture libraries.

``runtime/`` is the shared training runtime (configs, trainer, checkpoints, EMA, bundles, the
system registry), ``data/`` the data wiring every system shares, ``systems/<system>/`` one folder
per system, ``evaluation/`` set-level evaluation of npz folders and ``cli/`` the ``gesture``
command.
"""

from gesture_apps.cli import environment_report, main
from gesture_apps.errors import CLIError, ConfigError

__version__ = "0.1.0"

__all__ = ["CLIError", "ConfigError", "environment_report", "main"]
