"""Trainers, pipelines and the ``gesture`` command built on the gesture libraries.

``gesture_apps.runtime`` is the shared training runtime (configs, loop, EMA, checkpoints);
``gesture_apps.recipes`` holds one module per trainer.
"""

from .cli import CLIError, environment_report, main
from .errors import ConfigError

__version__ = "0.1.0"

__all__ = ["CLIError", "ConfigError", "environment_report", "main"]
