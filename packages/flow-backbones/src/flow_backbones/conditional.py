"""The model protocol every objective, sampler and distiller of this package calls.

A conditional velocity model is called ``model(x, t, d, cond, keep) -> v``:

* ``x`` ``(B, ...)`` the state at time ``t`` ``(B,)`` (``t = 0`` noise, ``t = 1`` data);
* ``d`` ``(B,)`` the step size, read by shortcut / MeanFlow models and 0 otherwise;
* ``cond`` any tree of ``(B, ...)`` tensors (see :func:`flow_backbones.utils.tree_map`), or None;
* ``keep`` ``(B,)`` bool: ``keep[i] = False`` means row ``i`` uses the model's null condition
  (classifier-free guidance).

A model whose condition is costly to consume at every step (cross-attention keys and values
of a long audio feature, say) may also define ``prepare_condition(cond, keep) -> prepared``.
The sampling helpers (:func:`flow_backbones.samplers.conditioned` and everything built on it)
then call it once per sampling run, with the ``keep`` rows of that run, and pass ``prepared``
as ``cond`` to every step, so such a model's ``forward`` must accept both a raw condition
(training) and whatever its ``prepare_condition`` returns (sampling). ``keep`` is part of the
call because the null rows of a guided batch need the null condition prepared, not ``cond``.
A model without ``prepare_condition`` receives the raw condition, as before.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


class ConditionalModel(Protocol):
    """``(x (B, ...), t (B,), d (B,), cond, keep (B,) bool) -> velocity (B, ...)``."""

    def __call__(self, x: Tensor, t: Tensor, d: Tensor, cond: Any, keep: Tensor) -> Tensor: ...


@runtime_checkable
class PreparesCondition(Protocol):
    """A model that turns a condition into a per-run cache (see the module docstring)."""

    def prepare_condition(self, cond: Any, keep: Tensor) -> Any: ...


def prepare_condition(model: Any, cond: Any, keep: Tensor) -> Any:
    """``model.prepare_condition(cond, keep)`` when the model defines it, else ``cond``.

    Args:
        model: a :class:`ConditionalModel`.
        cond: tree of ``(B, ...)`` tensors, or None.
        keep: ``(B,)`` bool, the rows that use ``cond`` (False: the null condition).
    """
    if isinstance(model, PreparesCondition):
        return model.prepare_condition(cond, keep)
    return cond
