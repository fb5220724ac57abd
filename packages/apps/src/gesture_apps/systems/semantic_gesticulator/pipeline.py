"""Speech -> co-speech motion with semantic gestures, Semantic Gesticulator's generation
(``generate_semantic_gestures.py``) on our bundles.

audio (16 kHz wav) -> SG audio features at the token rate -> layer-0 codes by the coarse GPT,
layers 1..3 by the fine GPTs (``sg_generate_codes``) -> word timings (TextGrid, else Whisper)
-> retrieval of a gesture per word (sentence embeddings; an OpenAI-compatible LLM with
``llm_url``) -> injection of each gesture's codes at its word (:mod:`.injection`) -> decode
with SG's gaussian filter at the inserted windows -> denormalise -> :class:`Motion` of
``floor(seconds * 30)`` frames, and the list of injected gestures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gesture_apps.data.speech import MIN_SECONDS, SAMPLE_RATE, read_audio
from gesture_apps.errors import GenerationError
from gesture_apps.runtime.device import resolve_device
from gesture_apps.systems.semantic_gesticulator.injection import inject_all
from gesture_apps.systems.semantic_gesticulator.inventory import Inventory, build_inventory
from gesture_apps.systems.semantic_gesticulator.model import (
    SGModels,
    audio_features,
    load_models,
    to_motion,
)
from gesture_apps.systems.semantic_gesticulator.retrieval import (
    EmbeddingRetriever,
    LLMRetriever,
    Retrieval,
)
from gesture_apps.systems.semantic_gesticulator.transcripts import WordTiming, word_timings
from gesture_data.motion import Motion
from motion_tokenizers.priors import sg_generate_codes


@dataclass
class SGResult:
    """A generation: the motion, the injected gestures (``gestures.json`` rows) and their
    windows in frames."""

    motion: Motion
    gestures: list[dict]
    windows: list[tuple[int, int]]  # frame ranges of the injected gestures
    codes: dict[str, torch.Tensor]  # final codes (1, N, 4) per part


def fine_window(models: SGModels) -> int:
    from gesture_apps.systems.semantic_gesticulator.train import block_size

    return block_size(models.fines[0])


@torch.no_grad()
def generate_semantic(
    models: SGModels,
    samples: np.ndarray,
    words: list[WordTiming],
    *,
    inventory: Inventory | None = None,
    retrievals: list[Retrieval] | None = None,
    retriever=None,
    seed: int = 0,
    regenerate_fine: bool = True,
) -> SGResult:
    """Samples ``(S,)`` at 16 kHz + word timings -> :class:`SGResult`. Retrievals come from
    ``retrievals`` or ``retriever.retrieve(words)``; without an inventory none is injected."""
    feats = audio_features(
        samples, SAMPLE_RATE, fps=models.feature_fps, ds_rate=models.ds_rate, scaler=models.scaler
    )
    dev = models.codec.device
    cond = torch.from_numpy(feats)[None].to(dev)  # (1, N, 437)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    codes = sg_generate_codes(
        models.coarse,
        models.fines,
        cond,
        body0=models.body0,
        hands0=models.hands0,
        generator=gen,
        window=fine_window(models),
    )
    codes = {k: v.cpu() for k, v in codes.items()}
    n = codes["body"].shape[1]
    cond = cond[:, :n]
    picked: list[tuple[Retrieval, int]] = []
    if inventory is not None:
        if retrievals is None:
            retrievals = retriever.retrieve(words) if retriever is not None else []
        rng = np.random.default_rng(seed)
        todo = []
        for r in sorted(retrievals, key=lambda r: r.start):
            if r.index not in inventory.codes:
                continue
            take, k = inventory.take(r.index, rng)
            at = round(r.end * models.token_rate)  # SG: end_code = round(end * fps / ds)
            todo.append((take, at))
            picked.append((r, k))
        codes, windows = inject_all(
            models.codec.tokenizer,
            codes,
            todo,
            fines=models.fines if regenerate_fine else None,
            cond=cond.cpu() if regenerate_fine else None,
            window=fine_window(models),
        )
    else:
        windows = []
    done = [(r, k, w) for (r, k), w in zip(picked, windows, strict=True) if w is not None]
    token_windows = [w for _, _, w in done]
    x = models.codec.decode(codes, insert_windows=token_windows or None)
    T = int(samples.size * models.fps // SAMPLE_RATE)
    if len(x) < T:  # the GPT's last tokens may stop short of the audio: hold the last pose
        x = np.concatenate([x, np.repeat(x[-1:], T - len(x), axis=0)])
    motion = to_motion(x[:T], models.fps)
    unit, rate = models.codec.unit, models.token_rate
    gestures = [
        {
            "word": r.word,
            "time": float(r.start),
            "label": r.label,
            "score": float(r.score),
            "index": r.index,
            "take": k,
            "start": s / rate,
            "end": e / rate,
        }
        for r, k, (s, e) in done
    ]
    frames = [(s * unit, min(T, e * unit)) for s, e in token_windows]
    return SGResult(motion, gestures, frames, codes)


def make_retriever(inventory: Inventory, llm_url: str | None = None):
    """Sentence-embedding retrieval, or an LLM endpoint falling back to it."""
    emb = EmbeddingRetriever(inventory.entries)
    if llm_url:
        return LLMRetriever(llm_url, inventory.entries, fallback=emb)
    return emb


def generate(
    audio: str | Path,
    *,
    checkpoint: str | Path,
    textgrid: str | Path | None = None,
    seg_dir: str | Path | None = None,
    llm_url: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    regenerate_fine: bool = True,
    **_unused,
) -> tuple[Motion, list[dict]]:
    """Speech (a mono 16 kHz wav) -> (motion, injected gestures ``[{"word", "time",
    "label", "score", ...}]``). With ``seg_dir`` (a gesture folder, see :mod:`.inventory`)
    semantic gestures are retrieved and injected; without, the motion is SG's rhythmic
    generation alone. With ``out`` (``.npz`` or ``.bvh``) the motion and
    ``<out>.gestures.json`` are written atomically. Options other generators take (steps,
    guidance, bf16) are ignored."""
    samples = read_audio(audio)
    if samples.size < MIN_SECONDS * SAMPLE_RATE:
        raise GenerationError(f"{audio}: audio too short")
    models = load_models(checkpoint, resolve_device(device))
    inventory = build_inventory(seg_dir, models.codec) if seg_dir is not None else None
    words: list[WordTiming] = []
    if inventory is not None:
        words = word_timings(audio, textgrid)
    retriever = make_retriever(inventory, llm_url) if inventory is not None else None
    result = generate_semantic(
        models,
        samples,
        words,
        inventory=inventory,
        retriever=retriever,
        seed=seed,
        regenerate_fine=regenerate_fine,
    )
    if out is not None:
        write_outputs(out, result)
    return result.motion, result.gestures


def generate_motion(audio, *, checkpoint, textgrid=None, seed: int = 0, device=None, **_unused):
    """The registry's ``generate``: motion only (rhythmic generation, no inventory)."""
    return generate(audio, checkpoint=checkpoint, textgrid=textgrid, seed=seed, device=device)[0]


def gestures_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".gestures.json")


def write_outputs(out: str | Path, result: SGResult) -> tuple[Path, Path]:
    """``out`` (.npz BEAT2 layout or .bvh) and ``<out>.gestures.json``, each atomically."""
    from motion_tokenizers.io import atomic_write

    out = Path(out)
    if out.suffix.lower() == ".bvh":
        write_smplx_bvh(out, result.motion)
    elif out.suffix.lower() == ".npz":
        from gesture_data.motion import write_beat2_npz

        write_beat2_npz(out, result.motion)
    else:
        raise GenerationError(f"{out}: expected a .npz or .bvh file name")
    text = json.dumps(result.gestures, indent=2)
    js = gestures_path(out)
    atomic_write(js, lambda p: p.write_text(text, encoding="utf-8"))
    return out, js


def zxy_degrees(m: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> intrinsic Z, X, Y Euler angles ``(..., 3)`` in
    degrees (``R = Rz(a) Rx(b) Ry(c)``, BVH's ``Zrotation Xrotation Yrotation``)."""
    b = np.arcsin(np.clip(m[..., 2, 1], -1.0, 1.0))
    a = np.arctan2(-m[..., 0, 1], m[..., 1, 1])
    c = np.arctan2(-m[..., 2, 0], m[..., 2, 2])
    return np.degrees(np.stack([a, b, c], axis=-1))


def write_smplx_bvh(path: Path, motion: Motion) -> None:
    """SMPL-X axis-angle motion as a BVH on an SMPL-X-shaped skeleton (gesture_data has no
    SMPL-X BVH writer): the 55 joints with their rest offsets (centimetres, Y up), the root
    with position channels, every joint rotated in ``Z X Y`` Euler degrees (SeG's order)."""
    from gesture_data.datasets.bvh import BvhMotion, write_bvh
    from gesture_data.rotations import axis_angle_to_matrix
    from gesture_data.skeleton import SMPLX_NAMES, SMPLX_PARENTS, SMPLX_REST

    T, J = motion.num_frames, len(SMPLX_NAMES)
    parents = [int(p) for p in SMPLX_PARENTS]
    # BVH lists joints depth first (a joint's children right after it), SMPL-X does not
    children = [[c for c in range(J) if parents[c] == j] for j in range(J)]
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    where = {j: k for k, j in enumerate(order)}
    rest = np.asarray(SMPLX_REST, np.float64) * 100.0
    offsets = np.stack([rest[j] - (rest[parents[j]] if parents[j] >= 0 else 0.0) for j in order])
    aa = torch.from_numpy(motion.poses.reshape(T, J, 3).astype(np.float64))
    euler = zxy_degrees(axis_angle_to_matrix(aa).numpy())[:, order]
    channels = [["Zrotation", "Xrotation", "Yrotation"] for _ in range(J)]
    channels[0] = ["Xposition", "Yposition", "Zposition", *channels[0]]
    bvh = BvhMotion(
        names=[SMPLX_NAMES[j] for j in order],
        parents=[where[parents[j]] if parents[j] >= 0 else -1 for j in order],
        offsets=offsets,
        channels=channels,
        frame_time=1.0 / motion.fps,
        root_positions=np.asarray(motion.trans, np.float64) * 100.0,  # FK adds the OFFSET
        rotations=euler,
        end_sites={},
    )
    write_bvh(path, bvh)
