"""OmniHuman configuration: backbone, condition modules, training stages, sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flow_backbones import ConditionSchedule, ConditionStage
from gesture_apps.runtime import TrainConfig
from gesture_apps.systems.omnihuman.data import VideoDataConfig
from gesture_apps.systems.omnihuman.model import CONDITIONS

EXPORT = "omnihuman"


@dataclass
class OmniHumanModelConfig:
    """The ``model:`` section.

    ``backbone: dit`` builds ``flow_backbones.DiT`` at ``size`` (``tiny``, ``small`` or
    ``wan1.3b``: Wan2.1-T2V-1.3B's shape); ``backbone: wan`` adapts diffusers'
    ``WanTransformer3DModel``: a user's local Wan2.1 ``transformer/`` folder (``wan_path``) or,
    without one, a tiny random one."""

    backbone: Literal["dit", "wan"] = "dit"
    size: str = "tiny"
    dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    wan_path: str | None = None
    patch_size: tuple[int, int, int] = (1, 2, 2)  # DiT patches (time, height, width)
    audio_dim: int = 64
    audio_context: int = 1  # neighbouring video frames on each side in an audio token
    pose_channels: int = 8
    heatmap_size: int = 32
    text_encoder: str = "minilm"
    text_tokens: int = 32

    def dit_overrides(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("dim", "depth", "num_heads") if getattr(self, k)}


@dataclass
class StageConfig:
    """One training stage: its optimizer steps and each condition's keep probability."""

    name: str
    steps: int
    keep: dict[str, float]


def _seed_stages() -> list[StageConfig]:
    # the OmniHuman seed's table (stronger condition, lower ratio); motion frames are kept in
    # half of the segments so the first segment of a video (no previous frames) is trained too
    def stage(name: str, steps: int, audio: float, pose: float) -> StageConfig:
        keep = dict(text=1.0, reference=1.0, audio=audio, pose=pose, motion=0.5)
        return StageConfig(name, steps, keep)

    return [
        stage("text+reference", 50_000, 0.0, 0.0),
        stage("+audio", 30_000, 0.5, 0.0),
        stage("+pose", 20_000, 0.25, 0.13),
    ]


@dataclass
class OmniHumanLossConfig:
    """Flow matching in the library's convention (``x_t = t x1 + (1 - t) x0``, target
    ``x1 - x0``) on the noisy segment only, logit-normal times (SD3)."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    # extra drop of text and audio on top of the stage ratios: the unconditional branch
    # classifier-free guidance needs (text is kept at ratio 1 in every stage)
    cfg_drop: float = 0.1
    schedule_per: Literal["sample", "batch"] = "sample"

    def __post_init__(self) -> None:
        if not 0.0 <= self.cfg_drop < 1.0:
            raise ValueError(f"cfg_drop must be in [0, 1), found {self.cfg_drop}")


@dataclass
class OmniHumanSampleConfig:
    """Default inference settings stored with the bundle. Guidance on audio and on text is
    annealed linearly from its value at the first step (noise) to ``*_end`` at the last
    (OmniHuman's CFG annealing: strong guidance for the layout, weak for the details, which
    keeps expressive motion without the over-saturated frames of constant guidance)."""

    steps: int = 20
    shift: float = 1.0
    audio_guidance: float = 2.5
    audio_guidance_end: float = 1.0
    text_guidance: float = 1.5
    text_guidance_end: float = 1.0


@dataclass
class OmniHumanRecipeConfig:
    recipe: Literal["omnihuman"] = "omnihuman"
    vae: str | None = None  # a `gesture train omnihuman-vae` run / export, or a Wan2.1 vae/
    model: OmniHumanModelConfig = field(default_factory=OmniHumanModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    stages: list[StageConfig] = field(default_factory=_seed_stages)
    loss: OmniHumanLossConfig = field(default_factory=OmniHumanLossConfig)
    sample: OmniHumanSampleConfig = field(default_factory=OmniHumanSampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for s in self.stages:
            if sorted(s.keep) != sorted(CONDITIONS):
                raise ValueError(
                    f"stages: stage {s.name!r} keeps {sorted(s.keep)}, expected every "
                    f"condition of {list(CONDITIONS)}"
                )
        self.schedule()  # validates ratios and steps

    def schedule(self) -> ConditionSchedule:
        """The stage manager of the ``stages:`` section (seeded by ``train.seed``)."""
        stages = [ConditionStage(name=s.name, steps=s.steps, keep=s.keep) for s in self.stages]
        return ConditionSchedule(stages, per=self.loss.schedule_per, seed=self.train.seed)
