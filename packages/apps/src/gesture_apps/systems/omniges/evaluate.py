"""``gesture eval omniges``: every task of a bundle scored on held-out windows.

Each held-out window (motion, its speech, its transcript) is the condition of every task whose
source it has, and the window's other streams are the truth:

* gesture (t2g, a2g): FGD over the set (with an FGD encoder), beat consistency of the generated
  motion with the window's speech (no edge trim: windows are seconds long), L1 diversity, and
  the mean joint-position error to the true motion;
* text (g2t, a2t): corpus BLEU, mean ROUGE-L, and the cosine similarity of sentence embeddings
  (all-MiniLM-L6-v2 when given a text encoder);
* audio (g2a, t2a): log-spectral distance and mel-cepstral distortion to the true speech, and
  the beat alignment of the generated audio with the true motion.

``mismatched=True`` gives every window the condition of another clip's window: the baseline a
conditioned model has to beat on its own task's metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gesture_apps.data.motion import joints_approx
from gesture_apps.systems.omniges.pipeline import NAMES, OmnigesPipeline
from gesture_data.motion import Motion

LOWER_IS_BETTER = {"fgd", "mpjpe", "lsd", "mcd", "l1div_gap"}


@dataclass
class EvalWindow:
    """One held-out window: motion, its 16 kHz speech and its transcript."""

    motion: Motion
    audio: np.ndarray
    text: str
    clip: int = 0


def mismatch(windows: Sequence[EvalWindow]) -> list[int]:
    """For every window the index of a window from another clip (the nearest one after it)."""
    n = len(windows)
    out = []
    for i, w in enumerate(windows):
        j = next(((i + k) % n for k in range(1, n) if windows[(i + k) % n].clip != w.clip), None)
        if j is None:
            raise ValueError("mismatched conditions need windows from at least two clips")
        out.append(j)
    return out


def _mean_speed(joints: list[np.ndarray]) -> np.ndarray:
    """``(J,)`` mean per-frame joint speed of the true motion: BC's normaliser (the role of
    BEAT2's ``mean_vel`` file), so that generated and true motion share one scale."""
    return np.mean(np.concatenate([np.linalg.norm(np.diff(j, axis=0), axis=-1) for j in joints]), 0)


def _gesture_metrics(preds, windows, fps, fgd_encoder) -> dict[str, float]:
    from gesture_eval import beat_consistency, l1_diversity

    joints = [joints_approx(m.poses, m.trans) for m in preds]
    true = [joints_approx(w.motion.poses, w.motion.trans) for w in windows]
    mean_v = _mean_speed(true)
    bc = [
        beat_consistency(j, w.audio, fps=int(fps), mean_velocity=mean_v, trim_seconds=0.0)
        for j, w in zip(joints, windows, strict=True)
    ]
    mpjpe = [
        float(np.linalg.norm(j[: len(t)] - t[: len(j)], axis=-1).mean())
        for j, t in zip(joints, true, strict=True)
    ]
    out = {
        "bc": float(np.nanmean(bc)),
        "l1div": float(l1_diversity(np.concatenate(joints))),
        "mpjpe": float(np.mean(mpjpe)),
    }
    if fgd_encoder is not None:
        from gesture_eval import fgd_features, frechet_distance

        fp = np.concatenate([fgd_features(m.poses, fgd_encoder) for m in preds])
        ft = np.concatenate([fgd_features(w.motion.poses, fgd_encoder) for w in windows])
        out["fgd"] = frechet_distance(fp, ft)
    return out


def _text_metrics(preds, windows, text_encoder) -> dict[str, float]:
    from gesture_eval.text import bleu, rouge_l

    refs = [w.text for w in windows]
    out = {"bleu": bleu(preds, refs), "rouge_l": rouge_l(preds, refs)}
    if text_encoder is not None:
        a, b = text_encoder.embed(preds), text_encoder.embed(refs)
        out["embedding_similarity"] = float(np.mean(np.sum(a * b, axis=1)))
    return out


def _audio_metrics(preds, windows, sample_rate) -> dict[str, float]:
    from gesture_eval.audio import (
        audio_gesture_alignment,
        log_spectral_distance,
        mel_cepstral_distortion,
    )

    lsd = [log_spectral_distance(p, w.audio) for p, w in zip(preds, windows, strict=True)]
    mean_v = _mean_speed([joints_approx(w.motion.poses, w.motion.trans) for w in windows])
    mcd = [
        mel_cepstral_distortion(p, w.audio, sample_rate=sample_rate)
        for p, w in zip(preds, windows, strict=True)
    ]
    align = [
        audio_gesture_alignment(
            joints_approx(w.motion.poses, w.motion.trans),
            p,
            sample_rate=sample_rate,
            mean_velocity=mean_v,
            trim_seconds=0.0,
        )
        for p, w in zip(preds, windows, strict=True)
    ]
    return {
        "lsd": float(np.mean(lsd)),
        "mcd": float(np.mean(mcd)),
        "beat_alignment": float(np.nanmean(align)),
    }


def evaluate_omniges(
    pipe: OmnigesPipeline,
    windows: Sequence[EvalWindow],
    tasks: Sequence[str],
    *,
    mismatched: bool = False,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    fgd_encoder=None,
    text_encoder=None,
) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` over ``windows`` (each task samples all windows in one
    batch from ``seed``)."""
    source = mismatch(windows) if mismatched else list(range(len(windows)))
    fps, sr = float(pipe.spec["fps"]), int(pipe.spec["sample_rate"])
    results = {}
    for task in tasks:
        src, dst = NAMES[task[0]], NAMES[task[2]]
        requests = []
        for i, w in enumerate(windows):
            c = windows[source[i]]
            seconds = w.motion.num_frames / fps
            requests.append(
                {
                    "text": {"prompt": c.text or ".", "seconds": seconds},
                    "audio": {"audio": c.audio[: round(seconds * sr)]},
                    "gesture": {"gesture": c.motion},
                }[src]
            )
        outs = pipe.generate(task, requests, steps=steps, guidance=guidance, seed=seed)
        preds = [{"gesture": o.motion, "audio": o.audio, "text": o.text}[dst] for o in outs]
        if dst == "gesture":
            results[task] = _gesture_metrics(preds, windows, fps, fgd_encoder)
        elif dst == "text":
            results[task] = _text_metrics(preds, windows, text_encoder)
        else:
            results[task] = _audio_metrics(preds, windows, sr)
    return results


def eval_windows(clips, pose_length: int, *, first_clip: int = 0) -> list[EvalWindow]:
    """Non-overlapping ``pose_length``-frame windows of ``Beat2Clip``-like clips (``poses``,
    ``trans``, ``expressions``, ``audio``, ``sample_rate``, ``fps``, ``words``), each with its
    speech and the words that overlap it."""
    out = []
    for ci, c in enumerate(clips):
        spf = c.sample_rate / c.fps
        frames = min(len(c.poses), int(len(c.audio) / spf))
        for s in range(0, frames - pose_length + 1, pose_length):
            e = s + pose_length
            t0, t1 = s / c.fps, e / c.fps
            words = [w for a, b, w in c.words if b > t0 and a < t1]
            out.append(
                EvalWindow(
                    motion=Motion(
                        np.asarray(c.poses[s:e], np.float32),
                        np.asarray(c.trans[s:e], np.float32),
                        np.asarray(c.expressions[s:e], np.float32),
                        fps=float(c.fps),
                    ),
                    audio=np.asarray(c.audio[round(s * spf) : round(e * spf)], np.float32),
                    text=" ".join(words),
                    clip=first_clip + ci,
                )
            )
    return out
