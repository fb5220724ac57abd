"""The one exception type of ``gesture_eval``.

``EvalError`` subclasses ``ValueError`` so callers that already catch ``ValueError`` for bad
input keep working; messages name the argument (or file) and the expected vs found shape.
"""

from __future__ import annotations


class EvalError(ValueError):
    """Invalid input to a gesture-eval metric (shape, length, NaN, sample rate, file layout)."""


__all__ = ["EvalError"]
