"""``gesture train reflow``: straighten a trained ``train lsm`` model on its own samples.

Liu, Gong, Liu 2023, "Flow Straight and Fast" (arXiv:2209.03003), as GestureLSM does it
(``shortcut_rvqvae_trainer.py::generate_samples`` + ``LSM.train_reflow``):

1. the teacher (a ``gesture train lsm`` run) integrates seeded noise for every training window
   with ``teacher_steps`` Euler steps and guidance ``teacher_guidance``
   (:func:`flow_backbones.build_reflow_pairs`), conditioned on the window's audio/word features
   (computed once by the teacher's encoder, as GestureLSM stores ``at_feat``) and seed frames;
2. a student initialised from the teacher is trained with the same shortcut objective on the
   deterministic (noise -> teacher sample) coupling, without condition dropout; the condition
   encoder is kept frozen (GestureLSM's stored features give it no gradient either).

The guided teacher samples are the targets, so the student samples with guidance 1 by default
(``sample.guidance``). The run folder gets the same ``lsm/`` export as ``train lsm``, so
``gesture generate --checkpoint RUN`` runs the student. Pairs are rebuilt (deterministically)
when a run is resumed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from flow_backbones import ShortcutLoss, build_reflow_pairs
from gesture_apps.data.latents import LatentWindows, encode_windows
from gesture_apps.data.windows import DataConfig, PartWindows, load_windows
from gesture_apps.errors import ConfigError
from gesture_apps.runtime import TrainConfig, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.systems.gesturelsm.config import SampleConfig, ShortcutConfig
from gesture_apps.systems.gesturelsm.model import LSMGenerator
from gesture_apps.systems.gesturelsm.train import export

logger = logging.getLogger(__name__)


def _no_dropout() -> ShortcutConfig:
    return ShortcutConfig(cond_drop_flow=0.0, cond_drop_consistency=0.0)


def _student_sampling() -> SampleConfig:
    return SampleConfig(steps=2, guidance=1.0)


@dataclass
class ReflowRecipeConfig:
    recipe: Literal["reflow"] = "reflow"
    teacher: str | None = None  # a `gesture train lsm` run, checkpoint or lsm/ export
    teacher_weights: Literal["ema", "model"] = "ema"
    teacher_steps: int = 20
    teacher_guidance: float = 2.0
    noise_seed: int = 0
    pair_batch: int = 64
    data: DataConfig = field(default_factory=DataConfig)  # pose_length follows the teacher
    loss: ShortcutConfig = field(default_factory=_no_dropout)
    sample: SampleConfig = field(default_factory=_student_sampling)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.teacher_steps < 1 or self.pair_batch < 1:
            raise ValueError("teacher_steps and pair_batch must be at least 1")


class PairsDataset(torch.utils.data.Dataset):
    """Item ``{"noise": (N, D), "sample": (N, D), "features": (N, C), "seed": (s, D)}``."""

    def __init__(self, noise: Tensor, sample: Tensor, features: Tensor, seed: Tensor | None):
        self.noise, self.sample, self.features, self.seed = noise, sample, features, seed

    def __len__(self) -> int:
        return self.noise.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"noise": self.noise[i], "sample": self.sample[i], "features": self.features[i]}
        if self.seed is not None:
            item["seed"] = self.seed[i]
        return item


class ReflowObjective(nn.Module):
    """Shortcut loss on fixed (noise, sample, condition) triples; the encoder stays frozen."""

    def __init__(self, generator: LSMGenerator, loss: ShortcutLoss):
        super().__init__()
        self.generator = generator
        self.generator.encoder.requires_grad_(False)
        self.loss = loss

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        cond = {"features": batch["features"]}
        if "seed" in batch:
            cond["seed"] = batch["seed"]
        out = self.loss(self.generator.denoiser, batch["sample"], cond, x0=batch["noise"])
        return out.loss, {"flow": out.flow, "consistency": out.consistency}


@dataclass
class ReflowRun:
    """Mirrors :class:`~gesture_apps.systems.gesturelsm.train.LSMRun` so one export function
    writes both bundles."""

    trainer: Trainer
    objective: ReflowObjective
    tokenizer: Any
    normalizer: Any
    vocab: Any
    spec: dict
    config: ReflowRecipeConfig


def _remap_words(windows, data_vocab, teacher_vocab) -> None:
    """Rewrite the windows' word indices from the data's vocabulary to the teacher's."""
    table = np.array([teacher_vocab[w] for w in data_vocab.itos], np.int64)
    table[0] = 0
    for c in windows.clips:
        c["words"] = table[np.asarray(c["words"])]


@torch.no_grad()
def build_pairs(cfg: ReflowRecipeConfig, bundle, windows) -> PairsDataset:
    """Teacher features, seeds and ODE samples for every window (deterministic)."""
    from gesture_data.datasets.windows import collate

    gen, tok = bundle.generator, bundle.tokenizer
    parts = list(tok.part_names)
    latents = encode_windows(tok, PartWindows(windows, parts, bundle.normalizer))
    ds = LatentWindows(windows, latents)
    feats = []
    for s in range(0, len(ds), cfg.pair_batch):
        b = collate([ds[i] for i in range(s, min(s + cfg.pair_batch, len(ds)))])
        feats.append(gen.encoder(b["audio"], b["words"]))
    features = torch.cat(feats)
    s = gen.seed_frames
    seed = latents[:, :s].clone() if s else None
    cond: dict[str, Tensor] = {"features": features}
    if seed is not None:
        cond["seed"] = seed
    g = torch.Generator().manual_seed(cfg.noise_seed)
    noise = torch.randn(latents.shape, generator=g)
    pairs = build_reflow_pairs(
        gen.denoiser,
        noise,
        cond,
        steps=cfg.teacher_steps,
        guidance=cfg.teacher_guidance,
        batch_size=cfg.pair_batch,
        pass_step_size=True,
    )
    return PairsDataset(pairs.noise, pairs.sample, features, seed)


def prepare(
    cfg: ReflowRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> ReflowRun:
    from gesture_apps.systems.gesturelsm.pipeline import load_lsm

    if not cfg.teacher:
        raise ConfigError(
            "teacher: pass a `gesture train lsm` run folder (--teacher DIR or teacher=DIR)"
        )
    bundle = load_lsm(cfg.teacher, ema=cfg.teacher_weights == "ema")
    spec = copy.deepcopy(bundle.spec)
    data = cfg.data
    if data.pose_length != spec["pose_length"]:
        logger.info("reflow: data.pose_length set to the teacher's %d", spec["pose_length"])
        data = dataclasses.replace(data, pose_length=spec["pose_length"])
    windows, vocab = load_windows(data)
    _remap_words(windows, vocab, bundle.vocab)
    pairs = build_pairs(cfg, bundle, windows)
    spec["sample"] = asdict(cfg.sample)
    spec["reflow"] = {"teacher_steps": cfg.teacher_steps, "teacher_guidance": cfg.teacher_guidance}
    torch.manual_seed(cfg.train.seed)
    student = LSMGenerator(spec)
    student.load_state_dict(bundle.generator.state_dict())
    objective = ReflowObjective(student, ShortcutLoss(**asdict(cfg.loss)))
    holder: dict[str, Any] = {}
    trainer = Trainer(
        model=objective,
        dataset=pairs,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(holder["run"], folder),
        progress=progress,
    )
    run = ReflowRun(
        trainer, objective, bundle.tokenizer, bundle.normalizer, bundle.vocab, spec, cfg
    )
    holder["run"] = run
    if resume is not None:
        trainer.load_checkpoint(resume)
    logger.info("reflow: %d (noise, sample, condition) triples", len(pairs))
    return run


def run(
    cfg: ReflowRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Build the pairs, train (or continue) the student, export it to ``out_dir/lsm/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: export(r, tmp))
