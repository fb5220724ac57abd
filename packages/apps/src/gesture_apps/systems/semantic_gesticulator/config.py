"""Configuration of ``gesture train semantic-gesticulator rvq|coarse|fine`` (the saved run
config).

Semantic Gesticulator trains in three stages, each its own run folder: ``rvq`` (the two-part
residual VQ-VAE on motion windows), ``coarse`` (the GPT over RVQ layer 0, from the ``rvq``
run given by ``--from``) and ``fine`` (the three GPTs of layers 1..3 together in one run, from
the ``coarse`` run). Each stage exports the bundle ``semantic_gesticulator/`` with every model
trained so far; the ``fine`` stage's is the one ``gesture generate`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gesture_apps.data.windows import DataConfig
from gesture_apps.runtime import TrainConfig

EXPORT = "semantic_gesticulator"  # the bundle folder in the run
SYSTEM = "semantic_gesticulator"  # the bundle's manifest system
STAGES = ("rvq", "coarse", "fine")
FPS = 30.0  # BEAT2 / synthetic corpus motion frame rate

# Our motion layout: BEAT2's 55 SMPL-X joints (axis-angle) with the root translation as a 56th
# slot, as SG keeps its translation in the slot after its 72 joints (joint_num + 1 slots of 3).
JOINT_NUM = 55
TRANS_SLOT = 55
# body: pelvis..jaw (0..22) + translation. The jaw is kept (SG's mocap skeleton had none): in
# BEAT2 and the synthetic corpus it follows the speech envelope, the most audio-locked signal
# there is; the eyes (23, 24) are left out (static in BEAT2) and decode to zeros.
BODY_JOINTS = (*range(23), TRANS_SLOT)
HANDS_JOINTS = tuple(range(25, 55))  # the 30 finger joints, left then right
MOTION_DIM = (JOINT_NUM + 1) * 3  # 168 channels: poses (165) + trans (3)
# 4x temporal downsampling (2 stride-2 levels, SG has 3 at 60 fps): a token is 4 frames at
# 30 fps = 0.133 s, SG's token duration (8 frames at 60 fps), so its 15-token windows, GPT
# block sizes and audio features keep their meaning
DOWN_T = 2


@dataclass
class SGModelConfig:
    """The ``model:`` section. ``size`` picks the classmethod (``sg``: the released sizes,
    ``tiny``: the CPU-test size); the three mappings are keyword overrides passed to it
    (``SGRVQVAE``, ``SGCoarseGPT``, ``SGFineGPT``). ``cond_dim`` and the joint lists are
    set by the recipe, not here."""

    size: Literal["sg", "tiny"] = "sg"
    tokenizer: dict[str, Any] = field(default_factory=dict)
    coarse: dict[str, Any] = field(default_factory=dict)
    fine: dict[str, Any] = field(default_factory=dict)


@dataclass
class SGDataConfig(DataConfig):
    """The ``data:`` section (synthetic corpus or ``beat2:PATH``). ``pose_length``/``stride``
    cut the ``rvq`` stage's motion windows (SG: 120 frames at 60 fps, stride 4; the same
    2 s here is 60 frames at 30 fps); the GPT stages cut token windows of the GPT's block
    size with ``token_stride``."""

    pose_length: int = 60
    stride: int = 2
    token_stride: int = 1
    # normalised motion = (x - mean) / max(std, min_std) * motion_gain. The tokenizer adds a
    # fixed unit-amplitude sin-cos table to its conv latent; at small widths a z-scored
    # input's latent is far below it (measured at the tiny size: |latent| 0.14 vs 0.7) and
    # the layer-0 codes then encode the token position alone (1 distinct code per position
    # over 180 windows), so the decoder learns the mean pose. 1.0 is SG's StandardScaler.
    motion_gain: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.motion_gain > 0:
            raise ValueError(f"motion_gain must be positive, found {self.motion_gain}")


@dataclass
class SGAudioConfig:
    """SG's 437-d audio features (``gesture_data.features.sg_audio``), one row per token:
    ``fps / ds_rate`` rows per second, which must be the motion's token rate. SG's own values
    (60, 8: 7.5 Hz, analysed at 3840 Hz) fit our 30 fps motion tokenized 4x down (the
    default, see :data:`DOWN_T`); 3.75 Hz rows (8x down at 30 fps) would need a 1920 Hz
    analysis rate, where SG's 5-octave chroma CQT lies above Nyquist."""

    fps: float = 60.0
    ds_rate: int = 8


@dataclass
class SGSampleConfig:
    """Generation defaults stored in the bundle: SG's first codes (``init_body_pose_code``,
    ``init_hands_pose_code``) and the fine GPTs' window (their block size)."""

    body0: int = 40
    hands0: int = 40


def _sg_train() -> TrainConfig:
    # SG's motion_rvq_train.yaml / motion_gpt.yaml: AdamW (0.9, 0.999), lr 1e-4 (RVQ) and
    # 5e-4 (GPTs), no weight decay; the stage preset sets lr and the step count
    return TrainConfig(
        max_steps=100000,
        batch_size=256,
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        grad_clip=None,
        ema_decay=None,
    )


@dataclass
class SGRecipeConfig:
    recipe: Literal["semantic-gesticulator"] = "semantic-gesticulator"
    stage: Literal["rvq", "coarse", "fine"] = "rvq"
    # the previous stage's run folder or bundle (coarse: the rvq run, fine: the coarse run)
    previous: str | None = None
    model: SGModelConfig = field(default_factory=SGModelConfig)
    data: SGDataConfig = field(default_factory=SGDataConfig)
    audio: SGAudioConfig = field(default_factory=SGAudioConfig)
    sample: SGSampleConfig = field(default_factory=SGSampleConfig)
    train: TrainConfig = field(default_factory=_sg_train)
