"""Training objectives: flow matching, shortcut, MeanFlow, and reflow pairs."""

from .flow_matching import FlowLossOutput, FlowMatchingLoss
from .meanflow import MeanFlowLoss, MeanFlowLossOutput
from .reflow import ReflowPairs, build_reflow_pairs
from .shortcut import ShortcutLoss, ShortcutLossOutput

__all__ = [
    "FlowLossOutput",
    "FlowMatchingLoss",
    "MeanFlowLoss",
    "MeanFlowLossOutput",
    "ReflowPairs",
    "ShortcutLoss",
    "ShortcutLossOutput",
    "build_reflow_pairs",
]
