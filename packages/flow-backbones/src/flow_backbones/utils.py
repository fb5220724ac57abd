"""Helpers over condition trees: a tensor, a dict/list/tuple of tensors, or None."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def tree_map(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    """Apply ``fn`` to every tensor leaf; other leaves (None, numbers, str) pass through."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, v) for v in tree)
    return tree


def tree_map2(fn: Callable[[Tensor, Tensor], Tensor], a: Any, b: Any) -> Any:
    """Like :func:`tree_map` over two trees of the same structure."""
    if isinstance(a, Tensor):
        return fn(a, b)
    if isinstance(a, dict):
        return {k: tree_map2(fn, a[k], b[k]) for k in a}
    if isinstance(a, list | tuple):
        return type(a)(tree_map2(fn, x, y) for x, y in zip(a, b, strict=True))
    return a
