"""Omniges configuration: the MMDiT's size, the any-to-any tasks, sampling (the saved config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gesture_apps.data.windows import DataConfig
from gesture_apps.runtime import TrainConfig

EXPORT = "omniges"
TASKS = ("t2g", "g2t", "a2g", "g2a", "t2a", "a2t")
STREAMS = ("gesture", "text", "audio")  # OmniFlow's joint order: image (here gesture), text, audio

# per size: width, blocks, heads (OmniFlow/Omniges: 24 x 24 heads x 64 = 1536)
SIZES = {
    "omniges": dict(dim=1536, depth=24, num_heads=24),
    "mid": dict(dim=512, depth=8, num_heads=8),
    "tiny": dict(dim=64, depth=2, num_heads=4),
}


@dataclass
class OmnigesModelConfig:
    """The ``model:`` section. Unset sizes take the ``size`` preset's value."""

    size: Literal["omniges", "mid", "tiny"] = "omniges"
    dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    qk_norm: bool = True
    # OmniFlow trains with one summed time embedding for all streams (split_cond=False)
    per_stream_time: bool = False
    # the text stream predicts its clean latents (OmniFlow's --precondition_text_outputs)
    text_predicts_x1: bool = True
    parts: tuple[str, ...] = ("upper", "hands", "lower", "face")

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        if not self.parts:
            raise ValueError("parts: at least one tokenizer part is required")

    def sizes(self) -> dict[str, int]:
        base = dict(SIZES[self.size])
        for k in base:
            if getattr(self, k) is not None:
                base[k] = getattr(self, k)
        return base


@dataclass
class OmnigesLossConfig:
    """The ``loss:`` section: OmniFlow's timestep roles (see ``MultiStreamFlowLoss``)."""

    tasks: tuple[str, ...] = TASKS
    schedule: Literal["random", "round_robin"] = "round_robin"
    task_probs: dict[str, float] | None = None
    task_loss_weights: dict[str, float] | None = None
    p_clean: float = 0.8
    cond_drop: float = 0.15
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks: expected a non-empty subset of {TASKS}, found {self.tasks}")


@dataclass
class OmnigesSampleConfig:
    """Default inference settings stored with the export (OmniFlow: 28 steps, shift 3)."""

    steps: int = 28
    shift: float = 3.0
    guidance: float = 2.0


def _omniges_data() -> DataConfig:
    return DataConfig(pose_length=64, stride=16)


@dataclass
class OmnigesRecipeConfig:
    recipe: Literal["omniges"] = "omniges"
    tokenizer: str | None = None  # a `gesture train tokenizer` run folder or its tokenizer/
    tokenizer_weights: Literal["ema", "model"] = "model"
    audio_codec: str | None = None  # an Omniges audio codec folder (vae/ + vocoder/)
    text_vae: str | None = None  # an Omniges text VAE folder
    model: OmnigesModelConfig = field(default_factory=OmnigesModelConfig)
    data: DataConfig = field(default_factory=_omniges_data)
    loss: OmnigesLossConfig = field(default_factory=OmnigesLossConfig)
    sample: OmnigesSampleConfig = field(default_factory=OmnigesSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
