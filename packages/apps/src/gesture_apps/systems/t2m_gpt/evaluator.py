"""``gesture train t2m-evaluator``: Guo et al. 2022's text/motion matching evaluator trained on a
HumanML3D-layout folder (HumanML3D, KTubeUM, or the built-in synthetic Korean corpus).

Objective as Guo's ``text_mot_match``: a text and a motion encoder (gesture_eval's
:class:`~gesture_eval.text2motion.T2MEvaluator`) embed each (caption, motion) pair; matched
pairs are pulled together and each caption is pushed at least ``loss.margin`` away from another
clip's motion (:func:`~gesture_eval.text2motion.contrastive_loss`). Motion is z-scored with the
folder's ``Mean.npy``/``Std.npy``, cut to whole 4-frame movement steps (at most
``data.max_motion_length`` frames) and zero-padded. One difference from Guo: the movement
convolutions train jointly with the rest, where Guo pre-trains them as an autoencoder and
freezes them.

The run folder gets ``checkpoints/step_*/`` (resumable) and the bundle ``t2m_evaluator/``:
``evaluator/`` (``save_pretrained``) and ``normalizer/`` (``Mean.npy``, ``Std.npy``; the
manifest stores the caption language and word settings). :func:`load_evaluator` reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from gesture_apps.errors import ConfigError, GenerationError
from gesture_apps.runtime import TrainConfig, Trainer, TrainResult, model_loss, to_dict
from gesture_apps.runtime.bundle import open_bundle, write_bundle
from gesture_apps.systems.t2m_gpt.words import caption_features
from gesture_eval.text2motion import T2MEvaluator, WordVectorizer, contrastive_loss

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT",
    "Evaluator",
    "T2MEvaluatorRecipeConfig",
    "TextMotionPairs",
    "load_evaluator",
    "run",
    "write_synthetic_humanml3d",
]

EXPORT = "t2m_evaluator"  # the bundle folder in the run
SYSTEM = "t2m-evaluator"


@dataclass
class EvaluatorModelConfig:
    """The ``model:`` section: a size preset; ``dim_word`` follows the language (E5: 384)."""

    size: Literal["guo2022", "tiny"] = "guo2022"
    dim_word: int | None = None


@dataclass
class EvaluatorDataConfig:
    """The ``data:`` section. ``source`` is a HumanML3D-layout folder (``--data DIR``) or
    ``synthetic`` (Korean clips of the built-in corpus, written into the run folder)."""

    source: str = "synthetic"
    split: str = "train"
    language: Literal["ko", "en"] = "ko"
    glove: str | None = None  # English: Guo's GloVe folder (our_vab_*)
    max_words: int = 20
    max_motion_length: int = 196
    num_clips: int = 64  # synthetic only
    seconds: float = 4.0  # synthetic only


@dataclass
class EvaluatorLossConfig:
    margin: float = 10.0  # Guo's negative_margin


@dataclass
class EvaluatorTrainConfig(TrainConfig):
    """Guo: Adam 1e-4, batch 32, no weight averaging; gradients clipped at 0.5."""

    lr: float = 1e-4
    ema_decay: float | None = None
    grad_clip: float | None = 0.5


@dataclass
class T2MEvaluatorRecipeConfig:
    recipe: Literal["t2m-evaluator"] = "t2m-evaluator"
    model: EvaluatorModelConfig = field(default_factory=EvaluatorModelConfig)
    data: EvaluatorDataConfig = field(default_factory=EvaluatorDataConfig)
    loss: EvaluatorLossConfig = field(default_factory=EvaluatorLossConfig)
    train: EvaluatorTrainConfig = field(default_factory=EvaluatorTrainConfig)


# ---------------------------------------------------------------- data
def write_synthetic_humanml3d(
    root: str | Path, *, num_clips: int, seconds: float = 4.0, seed: int = 0, language: str = "ko"
) -> Path:
    """A HumanML3D-layout folder from the synthetic corpus: each clip's SMPL-X motion ->
    approximate joints (first 22, resampled 30 -> 20 fps) -> 263-d features, with the clip's
    transcript as its one caption; seeded train/val/test splits."""
    from gesture_data.datasets import humanml3d
    from gesture_data.datasets.synthetic import make_clip
    from gesture_data.skeleton import smplx_joints_approx

    motions, captions = {}, {}
    for i in range(num_clips):
        clip = make_clip(i, seconds=seconds, seed=seed, language=language)
        joints = smplx_joints_approx(clip.poses, clip.trans)[:, :22].numpy()
        # HumanML3D is 20 fps: keep the frames nearest to 1/20 s steps
        keep = np.round(np.arange(0, len(joints), clip.fps / 20.0)).astype(int)
        motions[clip.clip_id] = joints[keep[keep < len(joints)]]
        text = " ".join(w for _, _, w in clip.words)
        captions[clip.clip_id] = [humanml3d.make_caption(text, language)]
    splits = humanml3d.make_splits(sorted(motions), seed=seed)
    return humanml3d.write_dataset(root, motions, captions, splits)


class TextMotionPairs(Dataset):
    """Every (caption, motion) pair of a split: ``word_emb (L, D)``, ``pos_ohot (L, 15)``,
    ``cap_lens ()``, ``motion (max_motion_length, 263)`` z-scored and zero-padded,
    ``m_lens ()`` whole 4-frame steps; also ``captions`` and ``ids`` (one per item)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        language: str = "ko",
        vectorizer: WordVectorizer | None = None,
        max_words: int = 20,
        max_motion_length: int = 196,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ):
        from gesture_data.datasets.humanml3d import HumanML3DReader

        reader = HumanML3DReader(root)
        self.mean = reader.mean if mean is None else mean
        self.std = reader.std if std is None else std
        if self.mean is None:
            raise ConfigError(f"{root}: Mean.npy/Std.npy missing (the evaluator z-scores motion)")
        self.ids, self.captions, motions = [], [], []
        for cid in reader.ids(split):
            feats = reader.features(cid)
            for cap in reader.texts(cid):
                self.ids.append(cid)
                # English: the tagged tokens (HumanML3D's spaCy tags feed the POS one-hots)
                self.captions.append(" ".join(cap.tokens) if language == "en" else cap.caption)
                motions.append(feats)
        if not self.ids:
            raise ConfigError(f"{root}: split {split!r} has no captioned clips")
        self.text = caption_features(
            self.captions, language=language, vectorizer=vectorizer, max_words=max_words
        )
        self.max_motion_length = max_motion_length - max_motion_length % 4
        self.motion = np.zeros((len(motions), self.max_motion_length, len(self.mean)), np.float32)
        self.m_lens = np.zeros(len(motions), np.int64)
        for i, f in enumerate(motions):
            n = min(len(f), self.max_motion_length) // 4 * 4
            if n < 4:
                raise ConfigError(f"{root}: clip {self.ids[i]} has {len(f)} frames (need >= 4)")
            self.motion[i, :n] = (f[:n] - self.mean) / self.std
            self.m_lens[i] = n

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "word_emb": self.text.word_emb[i],
            "pos_ohot": self.text.pos_ohot[i],
            "cap_lens": self.text.cap_lens[i],
            "motion": torch.from_numpy(self.motion[i]),
            "m_lens": torch.tensor(self.m_lens[i]),
        }


# ---------------------------------------------------------------- model
class EvaluatorObjective(nn.Module):
    """``forward(batch) -> (contrastive loss, {loss_pos, loss_neg})`` (one call, as DDP needs)."""

    def __init__(self, evaluator: T2MEvaluator, margin: float):
        super().__init__()
        self.evaluator, self.margin = evaluator, margin

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Any]]:
        text = self.evaluator.encode_text(batch["word_emb"], batch["pos_ohot"], batch["cap_lens"])
        motion = self.evaluator.encode_motion(batch["motion"], batch["m_lens"])
        out = contrastive_loss(text, motion, margin=self.margin)
        return out.loss, {"loss_pos": out.loss_pos.detach(), "loss_neg": out.loss_neg.detach()}


def _vectorizer(cfg: EvaluatorDataConfig) -> WordVectorizer | None:
    if cfg.language != "en":
        return None
    if not cfg.glove:
        raise ConfigError("data.glove: English captions need Guo's GloVe folder (our_vab_*)")
    return WordVectorizer(Path(cfg.glove).expanduser())


def _data_root(cfg: T2MEvaluatorRecipeConfig, out_dir: str | Path | None) -> Path:
    if cfg.data.source != "synthetic":
        root = Path(cfg.data.source).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.source: {root} is not a folder (a HumanML3D-layout dataset)")
        return root
    if out_dir is None:
        raise ConfigError("data.source=synthetic needs a run folder to write the corpus into")
    root = Path(out_dir) / "synthetic_data"
    if not (root / "all.txt").is_file():  # written once per run folder; resumes reuse it
        write_synthetic_humanml3d(
            root,
            num_clips=cfg.data.num_clips,
            seconds=cfg.data.seconds,
            seed=cfg.train.seed,
            language=cfg.data.language,
        )
    return root


@dataclass
class EvaluatorRun:
    trainer: Trainer
    model: T2MEvaluator
    dataset: TextMotionPairs
    config: T2MEvaluatorRecipeConfig


def prepare(
    cfg: T2MEvaluatorRecipeConfig,
    out_dir: str | Path | None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> EvaluatorRun:
    """Build data, model and trainer (and restore ``resume``)."""
    root = _data_root(cfg, out_dir)
    vectorizer = _vectorizer(cfg.data)
    dataset = TextMotionPairs(
        root,
        cfg.data.split,
        language=cfg.data.language,
        vectorizer=vectorizer,
        max_words=cfg.data.max_words,
        max_motion_length=cfg.data.max_motion_length,
    )
    dim_word = cfg.model.dim_word or dataset.text.word_emb.shape[-1]
    if dim_word != dataset.text.word_emb.shape[-1]:
        raise ConfigError(
            f"model.dim_word={dim_word} but the {cfg.data.language} word vectors are "
            f"{dataset.text.word_emb.shape[-1]}-d"
        )
    torch.manual_seed(cfg.train.seed)  # initial weights depend only on the seed
    build = T2MEvaluator.tiny if cfg.model.size == "tiny" else T2MEvaluator.guo2022
    model = build(dim_word=dim_word, dim_pose=len(dataset.mean))
    meta = {
        "language": cfg.data.language,
        "max_words": cfg.data.max_words,
        "glove": cfg.data.glove,
        "max_motion_length": dataset.max_motion_length,
    }
    trainer = Trainer(
        model=EvaluatorObjective(model, cfg.loss.margin),
        dataset=dataset,
        loss_fn=model_loss,
        config=cfg.train,
        out_dir=out_dir,
        run_config=to_dict(cfg),
        export_fn=lambda t, folder: export(t, folder, dataset, meta),
        progress=progress,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    n = sum(p.numel() for p in model.parameters())
    logger.info("t2m evaluator: %d parameters, %d caption/motion pairs", n, len(dataset))
    return EvaluatorRun(trainer, trainer.raw_model.evaluator, dataset, cfg)  # type: ignore[arg-type]


def export(trainer: Trainer, folder: Path, dataset: TextMotionPairs, meta: dict) -> None:
    """Write the bundle ``folder/t2m_evaluator/``."""
    model: T2MEvaluator = trainer.raw_model.evaluator  # type: ignore[assignment]

    def normalizer(sub: Path) -> None:
        from motion_tokenizers.io import atomic_write

        def save(arr: np.ndarray):
            def write(p: Path) -> None:
                with open(p, "wb") as f:  # a file object: np.save would add ".npy" to the name
                    np.save(f, np.asarray(arr, np.float32), allow_pickle=False)

            return write

        for name, arr in (("Mean.npy", dataset.mean), ("Std.npy", dataset.std)):
            atomic_write(sub / name, save(arr))

    write_bundle(
        folder / EXPORT,
        system=SYSTEM,
        components={"evaluator": (None, model.save_pretrained), "normalizer": (meta, normalizer)},
        layout="humanml3d",
        fps=20.0,
    )


def run(
    cfg: T2MEvaluatorRecipeConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue) and write ``out_dir/t2m_evaluator/``."""
    r = prepare(cfg, out_dir, resume=resume, progress=progress)
    meta = r.trainer.export_fn  # the same export as each checkpoint's
    return r.trainer.train_and_export(out_dir, steps, lambda tmp: meta(r.trainer, tmp))


# ---------------------------------------------------------------- inference
@dataclass
class Evaluator:
    """A trained evaluator with what it needs to score motion: ``model`` (eval mode),
    ``mean``/``std`` (263,) it z-scores with, the caption ``language`` and word settings."""

    model: T2MEvaluator
    mean: np.ndarray
    std: np.ndarray
    language: str
    max_words: int = 20
    glove: str | None = None
    max_motion_length: int = 196
    folder: Path | None = None

    def vectorizer(self) -> WordVectorizer | None:
        return WordVectorizer(Path(self.glove)) if self.language == "en" and self.glove else None

    @torch.no_grad()
    def text_embeddings(self, captions: list[str], vectorizer=None) -> Tensor:
        """``B`` captions -> ``(B, D)``."""
        f = caption_features(
            captions,
            language=self.language,
            vectorizer=vectorizer or self.vectorizer(),
            max_words=self.max_words,
        )
        return self.model.encode_text(*f)

    @torch.no_grad()
    def motion_embeddings(self, motions: list[np.ndarray]) -> Tensor:
        """``B`` un-normalised ``(T_i, 263)`` motions -> ``(B, D)`` (cut to whole 4-frame
        steps, at most ``max_motion_length`` frames, as in training)."""
        n = [min(len(m), self.max_motion_length) // 4 * 4 for m in motions]
        if min(n) < 4:
            raise GenerationError(f"motion {n.index(min(n))}: fewer than 4 frames to score")
        x = np.zeros((len(motions), max(n), len(self.mean)), np.float32)
        for i, (m, k) in enumerate(zip(motions, n, strict=True)):
            m = np.asarray(m, np.float32)
            if m.ndim != 2 or m.shape[1] != len(self.mean):
                raise GenerationError(
                    f"motion {i}: expected (T, {len(self.mean)}) features, found {m.shape}"
                )
            x[i, :k] = (m[:k] - self.mean) / self.std
        return self.model.encode_motion(torch.from_numpy(x), torch.tensor(n))


def load_evaluator(path: str | Path) -> Evaluator:
    """The ``t2m_evaluator`` bundle at ``path`` (the bundle, its run folder or a checkpoint)."""
    bundle = open_bundle(path, EXPORT)
    if bundle.system != SYSTEM:
        raise GenerationError(f"{bundle.folder}: a {bundle.system!r} bundle, not {SYSTEM!r}")
    model = T2MEvaluator.from_pretrained(bundle.path("evaluator")).eval()
    meta = bundle.config("normalizer")
    stats = []
    for name in ("Mean.npy", "Std.npy"):
        p = bundle.path("normalizer", name)
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise GenerationError(f"{p}: unreadable ({e})") from None
        if a.shape != (model.dim_pose,) or not np.isfinite(a).all():
            raise GenerationError(f"{p}: expected ({model.dim_pose},) finite, found {a.shape}")
        stats.append(a.astype(np.float32))
    return Evaluator(
        model,
        stats[0],
        stats[1],
        language=meta.get("language", "ko"),
        max_words=int(meta.get("max_words", 20)),
        glove=meta.get("glove"),
        max_motion_length=int(meta.get("max_motion_length", 196)),
        folder=bundle.folder,
    )
