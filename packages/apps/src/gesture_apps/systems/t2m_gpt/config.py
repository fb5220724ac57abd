"""Configuration of `gesture train t2m-gpt` (the saved run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gesture_apps.runtime import TrainConfig
from gesture_apps.systems.t2m_gpt.text import DEFAULT_SPEC, check_spec

EXPORT = "t2m_gpt"  # the bundle folder in the run
FPS = 20.0  # HumanML3D / KTubeUM frame rate


@dataclass
class T2MModelConfig:
    """The ``model:`` section: ``motion_tokenizers.priors.T2MGPT``'s sizes. Unset sizes take
    the ``size`` preset's value (``t2m_gpt``: T2M-GPT's README, ``tiny``: the CPU-test size);
    ``num_vq`` and ``clip_dim`` come from the tokenizer and the text encoder."""

    size: Literal["t2m_gpt", "tiny"] = "t2m_gpt"
    embed_dim: int | None = None
    block_size: int | None = None
    num_layers: int | None = None  # blocks in each of the base and the head
    n_head: int | None = None
    drop_out_rate: float | None = None
    fc_rate: int | None = None

    def overrides(self) -> dict:
        keys = ("embed_dim", "block_size", "num_layers", "n_head", "drop_out_rate", "fc_rate")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass
class T2MDataConfig:
    """The ``data:`` section: a HumanML3D-layout folder (KTubeUM, HumanML3D); ``--data DIR``
    sets ``source`` (``humanml3d:DIR`` is read the same)."""

    source: str = "data/KTubeUM"
    split: str = "train"
    # T2M-GPT's token dataset: motions of 40 to 196 frames, lengths cut to whole tokens
    # (multiples of the tokenizer's 4-frame unit); longer clips keep their first 196 frames
    min_frames: int = 40
    max_frames: int = 196

    def __post_init__(self) -> None:
        if self.source.startswith("humanml3d:"):
            self.source = self.source.partition(":")[2]
        if not self.source:
            raise ValueError("source: expected a HumanML3D-layout folder")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"min_frames/max_frames: expected 1 <= min <= max, found "
                f"{self.min_frames}/{self.max_frames}"
            )


@dataclass
class T2MTextConfig:
    """The ``text:`` section: the sentence encoder (see :mod:`.text`)."""

    encoder: str = DEFAULT_SPEC

    def __post_init__(self) -> None:
        check_spec(self.encoder)


@dataclass
class T2MLossConfig:
    pkeep: float = 0.5  # share of input codes kept (the rest replaced by random codes)

    def __post_init__(self) -> None:
        if not 0.0 <= self.pkeep <= 1.0:
            raise ValueError(f"pkeep must be in [0, 1], found {self.pkeep}")


def _t2m_train() -> TrainConfig:
    # T2M-GPT's train_t2m_trans: AdamW (0.5, 0.9), wd 1e-6, lr 1e-4, x0.05 at 150k, batch 128
    return TrainConfig(
        max_steps=300000,
        batch_size=128,
        lr=1e-4,
        betas=(0.5, 0.9),
        weight_decay=1e-6,
        milestones=(150000,),
        gamma=0.05,
        grad_clip=None,
        ema_decay=None,
    )


@dataclass
class T2MRecipeConfig:
    recipe: Literal["t2m-gpt"] = "t2m-gpt"
    tokenizer: str | None = None  # a `gesture train tokenizer` (model.kind vqvae) run or bundle
    model: T2MModelConfig = field(default_factory=T2MModelConfig)
    data: T2MDataConfig = field(default_factory=T2MDataConfig)
    text: T2MTextConfig = field(default_factory=T2MTextConfig)
    loss: T2MLossConfig = field(default_factory=T2MLossConfig)
    train: TrainConfig = field(default_factory=_t2m_train)
