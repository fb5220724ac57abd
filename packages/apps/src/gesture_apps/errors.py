"""User-facing errors of gesture_apps (the CLI prints them as one line and exits with 2)."""


class ConfigError(ValueError):
    """A preset is unknown, a key is misspelt, or a value has the wrong type."""


class GenerationError(ValueError):
    """Generation input is unusable: audio, word alignment, checkpoint or output path."""


class TrainingError(ValueError):
    """A run cannot go on: the loss or the weights became NaN or infinite (it diverged)."""


class CLIError(Exception):
    """A user-facing command-line error: printed as one line, exit status 2."""


def one_line(e: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (third-party messages span several), cut at
    ``limit`` characters: what error messages that wrap another error embed."""
    return " ".join(str(e).split())[:limit]
