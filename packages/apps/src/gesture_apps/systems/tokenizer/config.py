"""Configuration of `gesture train tokenizer` (the saved run config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gesture_apps.data.humanml3d import MOTION
from gesture_apps.data.windows import DataConfig
from gesture_apps.runtime import TrainConfig
from gesture_apps.runtime.config import BACKFILL
from motion_tokenizers import BEAT2_PART_DIMS, canonical_part_name


@dataclass
class TokenizerModelConfig:
    """The ``model:`` section. Unset sizes take the ``size`` preset's value.

    ``kind: vqvae`` is T2M-GPT's single-codebook tokenizer (``motion_tokenizers.VQVAE``) over
    the 263-d features of a HumanML3D-layout folder (``data.source: humanml3d``); its one
    "part" is ``motion``, ``size`` ``t2m_gpt`` (or ``gesturelsm``) is the paper's size."""

    kind: Literal["multipart", "rvqvae", "vqvae"] = "multipart"
    size: Literal["gesturelsm", "t2m_gpt", "tiny"] = "gesturelsm"
    parts: tuple[str, ...] = ("upper", "hands", "lower", "face")
    quantizer: Literal["rvq", "vq", "fsq", "rfsq", "lfq"] = "rvq"
    nb_code: int | None = None
    code_dim: int | None = None
    num_quantizers: int | None = None
    width: int | None = None
    depth: int | None = None
    down_t: int | None = None
    # unset: the RVQ-VAE's defaults (MoMask's 0.2 residual-block dropout, Gumbel code sampling
    # at temperature 0.5); 0 / false make a run a deterministic function of the data and seed
    dropout: float | None = None
    stochastic_sample_codes: bool | None = None
    quantize_dropout_prob: float | None = None  # unset: MoMask's 0.2
    latent_scale: float = 5.0

    def __post_init__(self) -> None:
        if self.kind == "vqvae":
            # one tokenizer over the whole 263-d HumanML3D vector, no BEAT2 body parts
            self.parts = (MOTION,)
            return
        # the first release named BEAT2's lower body `lower_trans`: saved runs still resume
        self.parts = tuple(canonical_part_name(p) for p in self.parts)
        bad = [p for p in self.parts if p not in BEAT2_PART_DIMS]
        if bad or not self.parts:
            raise ValueError(f"parts: expected names from {list(BEAT2_PART_DIMS)}, found {bad}")
        if self.kind == "rvqvae" and len(self.parts) != 1:
            raise ValueError(f"parts: kind 'rvqvae' trains one part, found {list(self.parts)}")


@dataclass
class LossConfig:
    recon: Literal["smooth_l1", "l1", "l2"] = "smooth_l1"
    commit_weight: float = 0.02
    vel_weight: float = 0.0
    acc_weight: float = 0.0
    # T2M-GPT's `loss_vel` (its ReConsLoss.forward_vel): despite the name, the reconstruction
    # loss on the root-relative joint positions, features [4 : (J-1)*3 + 4] of the HumanML3D
    # vector (its README trains with 0.5); only for model.kind vqvae
    local_pos_weight: float = field(default=0.0, metadata={BACKFILL: True})


@dataclass
class TokenizerTrainConfig(TrainConfig):
    """The ``train:`` section; as every recipe's, but without weight EMA unless asked for."""

    ema_decay: float | None = None


@dataclass
class TokenizerRecipeConfig:
    recipe: Literal["tokenizer"] = "tokenizer"
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
