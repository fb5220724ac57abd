"""Errors raised by flow_backbones.

Bad input is a ``ValueError`` subclass (so ``except ValueError`` keeps working) whose message
names the argument and the expected versus the found shape or value.
"""


class FlowInputError(ValueError):
    """A tensor, stream name, mask or time value passed to a model, loss or sampler is wrong."""


class CheckpointError(ValueError):
    """A checkpoint folder is missing a file, or its contents do not match the model."""
