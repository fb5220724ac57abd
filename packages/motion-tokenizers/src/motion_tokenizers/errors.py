"""Errors raised by motion_tokenizers.

Bad input is a `ValueError` (so `except ValueError` keeps working) with a message that names
the argument, the expected and the found shape.
"""


class TokenizerInputError(ValueError):
    """A motion or index tensor has the wrong shape, dtype or values."""


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file, or a file does not match the model."""
