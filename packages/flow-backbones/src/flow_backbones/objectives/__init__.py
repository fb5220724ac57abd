"""Training objectives: flow matching, shortcut, MeanFlow, reflow pairs, any-to-any multi-stream."""

from .flow_matching import FlowLossOutput, FlowMatchingLoss
from .meanflow import MeanFlowLoss, MeanFlowLossOutput
from .multistream import MultiStreamFlowLoss, MultiStreamLossOutput, omniges_tasks
from .reflow import ReflowPairs, build_reflow_pairs
from .shortcut import ShortcutLoss, ShortcutLossOutput

__all__ = [
    "FlowLossOutput",
    "FlowMatchingLoss",
    "MeanFlowLoss",
    "MeanFlowLossOutput",
    "MultiStreamFlowLoss",
    "MultiStreamLossOutput",
    "ReflowPairs",
    "ShortcutLoss",
    "ShortcutLossOutput",
    "build_reflow_pairs",
    "omniges_tasks",
]
