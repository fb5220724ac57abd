"""User-facing errors of gesture_apps (the CLI prints them as one line and exits with 2)."""


class ConfigError(ValueError):
    """A preset is unknown, a key is misspelt, or a value has the wrong type."""


class GenerationError(ValueError):
    """Generation input is unusable: audio, word alignment, checkpoint or output path."""


class TrainingError(ValueError):
    """A run cannot go on: the loss or the weights became NaN or infinite (it diverged)."""
