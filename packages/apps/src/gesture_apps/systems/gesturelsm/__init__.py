"""GestureLSM (Liu et al., ICCV 2025): training, generation, reflow and distillation recipes, and
the released checkpoints (:class:`GestureLSM`, loaded lazily so that importing a recipe module
stays light)."""

from __future__ import annotations

from typing import Any

__all__ = ["GestureLSM"]


def __getattr__(name: str) -> Any:
    if name == "GestureLSM":
        from gesture_apps.systems.gesturelsm.release import GestureLSM

        return GestureLSM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
