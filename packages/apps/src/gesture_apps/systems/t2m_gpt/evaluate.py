"""HumanML3D-style evaluation of a caption-to-motion generator (T2M-GPT's protocol).

For every (caption, clip) pair of a split, ``generate(captions, lengths)`` makes motion of the
ground truth's length; a trained evaluator (:func:`~.evaluator.load_evaluator`) embeds the
captions, the generated and the ground-truth motion, and gesture_eval scores them: FID
(generated vs ground-truth embeddings), R-precision top-1/2/3 and matching score in shuffled
32-sample batches, diversity over 300 random pairs (fewer on small sets), and optionally
multimodality (several generations of the same captions). With ``replications > 1`` each
metric is the mean over reshuffled runs and ``<metric>_conf95`` its 95 % interval half-width,
as HumanML3D papers report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gesture_apps.errors import GenerationError
from gesture_apps.systems.t2m_gpt.evaluator import Evaluator, load_evaluator
from gesture_eval.text2motion import frechet_distance, multimodality, t2m_metrics

logger = logging.getLogger(__name__)

__all__ = ["Generate", "evaluate_t2m", "ground_truth_generate", "split_items"]

#: ``generate(captions: list[str], lengths: LongTensor (B,) frames) -> [(T_i, 263) arrays]``,
#: un-normalised HumanML3D features.
Generate = Callable[[list[str], Tensor], list[np.ndarray]]


def split_items(
    data_root: str | Path, split: str, max_motion_length: int = 196, *, tokens: bool = False
):
    """``(ids, captions, motions)``: one entry per caption of each clip of ``split``, motions
    ``(T, 263)`` cut to whole 4-frame steps (at most ``max_motion_length``). ``tokens=True``
    gives the tagged token lines (``walk/VERB ...``) instead of the caption text."""
    from gesture_data.datasets.humanml3d import HumanML3DReader

    reader = HumanML3DReader(data_root)
    ids, captions, motions = [], [], []
    for cid in reader.ids(split):
        feats = reader.features(cid)
        n = min(len(feats), max_motion_length) // 4 * 4
        if n < 4:
            logger.warning("%s: %d frames, too short to score; skipped", cid, len(feats))
            continue
        for cap in reader.texts(cid):
            ids.append(cid)
            captions.append(" ".join(cap.tokens) if tokens else cap.caption)
            motions.append(feats[:n])
    if not ids:
        raise GenerationError(f"{data_root}: split {split!r} has no captioned clips to score")
    return ids, captions, motions


def ground_truth_generate(data_root: str | Path, split: str = "test") -> Generate:
    """A ``generate`` that returns each caption's ground-truth motion (first clip with that
    caption, cut to the asked length): the sanity row every table starts with."""
    _, captions, motions = split_items(data_root, split, max_motion_length=10**9)
    by_caption: dict[str, np.ndarray] = {}
    for c, m in zip(captions, motions, strict=True):
        by_caption.setdefault(c, m)

    def generate(caps: list[str], lengths: Tensor) -> list[np.ndarray]:
        return [by_caption[c][: int(n)] for c, n in zip(caps, lengths, strict=True)]

    return generate


def _generate_checked(generate: Generate, captions: list[str], lengths: Tensor, dim: int):
    out = generate(captions, lengths)
    if not isinstance(out, list | tuple) or len(out) != len(captions):
        got = len(out) if isinstance(out, list | tuple) else type(out).__name__
        raise GenerationError(f"generate returned {got} motions for {len(captions)} captions")
    motions = []
    for i, m in enumerate(out):
        m = np.asarray(m.detach().cpu() if isinstance(m, Tensor) else m, np.float32)
        if m.ndim != 2 or m.shape[1] != dim or len(m) < 4:
            raise GenerationError(
                f"generate: motion {i} has shape {m.shape}, expected (T>=4, {dim})"
            )
        if not np.isfinite(m).all():
            raise GenerationError(f"generate: motion {i} contains NaN/inf")
        motions.append(m)
    return motions


def _embed_motion(ev: Evaluator, motions: list[np.ndarray], batch_size: int) -> Tensor:
    return torch.cat(
        [
            ev.motion_embeddings(motions[s : s + batch_size])
            for s in range(0, len(motions), batch_size)
        ]
    )


def evaluate_t2m(
    generate: Generate,
    data_root: str | Path,
    evaluator_dir: str | Path | Evaluator,
    *,
    split: str = "test",
    replications: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    mm_samples: int = 0,
    mm_repeats: int = 10,
) -> dict[str, float]:
    """Score ``generate`` on ``split`` of the HumanML3D-layout ``data_root``.

    Returns ``fid``, ``r_precision_top1..3``, ``matching_score``, ``diversity``,
    ``pair_fid`` (FID over concatenated (text, motion) embeddings of each pair against the
    ground truth's pairs: the conditional form, not in the reference's table) (and
    ``multimodality`` when ``mm_samples > 0``: ``mm_repeats`` generations of each of the
    first ``mm_samples`` captions, pairs drawn as the reference does (it uses 30
    generations; pass ``mm_repeats=30`` for its setting; ``generate`` must then draw new
    samples on every call)). Every batch is exactly
    ``batch_size`` pairs; a remainder is left out, as the reference's loader drops it."""
    ev = evaluator_dir if isinstance(evaluator_dir, Evaluator) else load_evaluator(evaluator_dir)
    if replications < 1:
        raise GenerationError(f"replications must be at least 1, found {replications}")
    _, captions, gt = split_items(data_root, split, ev.max_motion_length)
    if len(captions) < batch_size:
        raise GenerationError(
            f"split {split!r} has {len(captions)} captions, fewer than one batch of {batch_size} "
            "(lower batch_size)"
        )
    dim = len(ev.mean)
    # English evaluators read HumanML3D's POS-tagged tokens; the generator gets the text
    words = split_items(data_root, split, ev.max_motion_length, tokens=True)[1]
    text_in = words if ev.language == "en" else captions
    text_all = torch.cat(
        [ev.text_embeddings(text_in[s : s + 64]) for s in range(0, len(text_in), 64)]
    ).numpy()
    gt_all = _embed_motion(ev, gt, batch_size).numpy()
    runs = []
    for r in range(replications):
        rng = np.random.default_rng(seed + r)
        order = rng.permutation(len(captions))[: len(captions) // batch_size * batch_size]
        gen_emb = []
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            lengths = torch.tensor([len(gt[i]) for i in idx])
            motions = _generate_checked(generate, [captions[i] for i in idx], lengths, dim)
            gen_emb.append(ev.motion_embeddings(motions))
        gen = torch.cat(gen_emb).numpy()
        out = {"fid": frechet_distance(gt_all[order], gen)}
        # FID of (caption, motion) embedding pairs: motion-only FID cannot tell a generator
        # that ignores its caption from one that follows it when both see the same captions
        # (the generated set has one distribution either way); the pairs' joint statistics can
        out["pair_fid"] = frechet_distance(
            np.concatenate([text_all[order], gt_all[order]], 1),
            np.concatenate([text_all[order], gen], 1),
        )
        out.update(t2m_metrics(text_all[order], gen, batch_size=batch_size, generator=seed + r))
        runs.append(out)
    result = {k: float(np.mean([o[k] for o in runs])) for k in runs[0]}
    if replications > 1:
        for k in runs[0]:
            result[f"{k}_conf95"] = float(
                1.96 * np.std([o[k] for o in runs]) / np.sqrt(replications)
            )
    if mm_samples > 0:
        if mm_repeats < 2:
            raise GenerationError(f"mm_repeats must be at least 2, found {mm_repeats}")
        idx = np.arange(min(mm_samples, len(captions)))
        lengths = torch.tensor([len(gt[i]) for i in idx])
        reps = []
        for _ in range(mm_repeats):
            motions = _generate_checked(generate, [captions[i] for i in idx], lengths, dim)
            reps.append(_embed_motion(ev, motions, batch_size).numpy())
        emb = np.stack(reps, axis=1)  # (N, R, D)
        result["multimodality"] = multimodality(emb, min(10, mm_repeats - 1), generator=seed)
    result["num_samples"] = float(len(captions) // batch_size * batch_size)
    return result
