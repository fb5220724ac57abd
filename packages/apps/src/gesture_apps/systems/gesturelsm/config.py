"""GestureLSM configuration: network sizes, shortcut loss, sampling (the saved run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gesture_apps.data.windows import DataConfig
from gesture_apps.runtime import TrainConfig
from motion_tokenizers import canonical_part_name

EXPORT = "lsm"


# per size: audio conv channels, audio width, word width, condition width (= denoiser cond_dim)
SIZES = {
    "gesturelsm": dict(audio_channels=(64, 64, 128, 256), audio_dim=256, word_dim=256, cond=768),
    "tiny": dict(audio_channels=(8, 8, 16, 16), audio_dim=16, word_dim=8, cond=12),
}


AUDIO_STRIDES = (5, 6, 6, 3)  # 540 samples per step, ~ one 30 fps frame at 16 kHz


@dataclass
class LSMModelConfig:
    """The ``model:`` section. Unset sizes take the ``size`` preset's value."""

    size: Literal["gesturelsm", "tiny"] = "gesturelsm"
    parts: tuple[str, ...] = ("upper", "hands", "lower")
    latent_dim: int | None = None
    ff_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    cross_layers: int | None = None
    seed_frames: int | None = None
    dropout: float | None = None
    audio_channels: tuple[int, ...] | None = None
    audio_dim: int | None = None
    word_dim: int | None = None
    seed_drop: float = 0.1
    # share of spoken words replaced by <unk> in training: 0 would leave <unk> (every word
    # unseen in training) untrained; 0.1 keeps 90% of the word signal while each of the
    # embedding's updates still sees ~10% <unk> frames of speech
    word_drop: float = 0.1

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("parts: at least one tokenizer part is required")
        # the first release named BEAT2's lower body `lower_trans`: saved runs still resume
        self.parts = tuple(canonical_part_name(p) for p in self.parts)
        for name in ("seed_drop", "word_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], found {value}")
        if self.audio_channels is not None and len(self.audio_channels) != len(AUDIO_STRIDES):
            raise ValueError(f"audio_channels: expected {len(AUDIO_STRIDES)} values")


@dataclass
class ShortcutConfig:
    """The ``loss:`` section (GestureLSM's values by default)."""

    consistency_fraction: float = 0.25
    min_log2: int = 1
    max_log2: int = 7
    cond_drop_flow: float = 0.1
    cond_drop_consistency: float = 0.8
    t_sampler: Literal["beta", "uniform", "logit_normal"] = "beta"


@dataclass
class SampleConfig:
    """Default inference settings stored with the export (``gesture generate`` may override)."""

    steps: int = 2
    guidance: float = 2.0


def _lsm_data() -> DataConfig:
    return DataConfig(pose_length=128, stride=20)


@dataclass
class LSMRecipeConfig:
    recipe: Literal["lsm"] = "lsm"
    tokenizer: str | None = None  # a `gesture train tokenizer` run folder or its tokenizer/
    # the un-averaged tokenizer, as GestureLSM uses it ("ema" only exists when the tokenizer run
    # set train.ema_decay; then its codebooks are averaged with its weights)
    tokenizer_weights: Literal["ema", "model"] = "model"
    model: LSMModelConfig = field(default_factory=LSMModelConfig)
    data: DataConfig = field(default_factory=_lsm_data)
    loss: ShortcutConfig = field(default_factory=ShortcutConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
