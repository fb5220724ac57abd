"""Trainers, pipelines and the ``gesture`` command built on the gesture libraries."""

from .cli import CLIError, environment_report, main

__version__ = "0.1.0"

__all__ = ["CLIError", "environment_report", "main"]
