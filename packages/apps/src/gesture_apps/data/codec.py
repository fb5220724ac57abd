"""The codec between BEAT2 motion and tokenizer latents: body-part keys, the normaliser and
the frozen tokenizers that turn windows into latents and latents back into motion."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gesture_apps.data.motion import Motion
from gesture_apps.errors import ConfigError, GenerationError, one_line
from gesture_apps.runtime.bundle import Bundle, open_bundle
from gesture_apps.runtime.checkpoint import check_finite
from gesture_data import BodyPartLayout, Normalizer, velocity_to_trans
from gesture_data.rotations import rot6d_to_axis_angle
from motion_tokenizers import BEAT2_PART_DIMS, MultiPartTokenizer
from motion_tokenizers.errors import CheckpointError

UNNORMALISED = ("face",)


# the smallest std a normaliser may hold: BEAT2's published stds go down to 1.5e-5 and fitted
# ones are clamped to data.min_std (1e-4); a zero std freezes the decoded motion on the mean
# pose and a NaN turns all of it into NaN, both without an error, so a loader refuses them
MIN_STD = 1e-8


def check_normalizer(normalizer, path: str | Path, parts) -> None:
    """Refuse a normaliser that would silently ruin every motion it touches: statistics
    missing for one of the tokenizer ``parts``, of the wrong size, non-finite, or a std below
    :data:`MIN_STD`. Raises ``CheckpointError`` naming the file and the part."""
    for part in parts:
        if part in UNNORMALISED:
            continue
        if part not in normalizer.stats:
            raise CheckpointError(f"{path}: no statistics for part {part!r}")
        mean, std = (np.asarray(a) for a in normalizer.stats[part])
        want = (BEAT2_PART_DIMS[part],) if part in BEAT2_PART_DIMS else mean.shape
        if mean.shape != want or std.shape != want:
            raise CheckpointError(
                f"{path}: '{part}/mean' and '{part}/std' must have shape {want}, found "
                f"{mean.shape} and {std.shape}"
            )
        for name, a in (("mean", mean), ("std", std)):
            if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                raise CheckpointError(
                    f"{path}: '{part}/{name}' has non-finite or non-numeric values"
                )
        if not (std >= MIN_STD).all():
            i = int(np.argmin(std))
            raise CheckpointError(
                f"{path}: '{part}/std' must be at least {MIN_STD}, found {std[i]} at channel {i}"
            )


def load_tokenizer_bundle(path: str | Path, parts, weights: str = "model"):
    """(frozen part-subset MultiPartTokenizer, Normalizer, Bundle) from a tokenizer bundle,
    a ``gesture train tokenizer`` run folder or one of its checkpoints. ``weights``:
    ``"ema"`` reads the averaged tokenizers when the bundle has them."""
    try:
        bundle = open_bundle(path, "tokenizer")
    except GenerationError as e:
        raise CheckpointError(f"not a tokenizer export: {e}") from None
    if bundle.system != "tokenizer":
        raise CheckpointError(
            f"{bundle.folder}: a {bundle.system!r} bundle, not a tokenizer (expected the "
            "export of `gesture train tokenizer`)"
        )
    name = "tokenizer_ema" if weights == "ema" and bundle.has("tokenizer_ema") else "tokenizer"
    where = bundle.path(name)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # huggingface_hub prints a line
            full = MultiPartTokenizer.from_pretrained(where)
    except (ValueError, OSError):
        raise
    except Exception as e:  # safetensors and json raise their own types for broken files
        raise CheckpointError(f"{where}: cannot load the tokenizer ({one_line(e, 200)})") from None
    missing = [p for p in parts if p not in full.part_names]
    if missing:
        raise ConfigError(f"model.parts: {missing} not in the tokenizer's {full.part_names}")
    tok = MultiPartTokenizer({p: full.parts[p] for p in parts}, latent_scale=full.latent_scale)
    tok.eval().requires_grad_(False)
    check_finite(tok, where)
    normalizer = load_normalizer(bundle, parts)
    return tok, normalizer, bundle


def load_normalizer(bundle: Bundle, parts) -> Normalizer:
    """The bundle's normaliser, checked for ``parts`` (:func:`check_normalizer`)."""
    path = bundle.path("normalizer", "normalizer.npz")
    normalizer = Normalizer.load(path)
    check_normalizer(normalizer, path, parts)
    return normalizer


def normalizer_config(normalizer: Normalizer) -> dict:
    """What a manifest records about a normaliser: the channels of each part."""
    return {"parts": {k: len(m) for k, (m, _) in normalizer.stats.items()}}


def decode_latents(
    tokenizer: MultiPartTokenizer,
    normalizer: Normalizer,
    latents: Tensor,
    num_frames: int,
    *,
    start: int = 0,
    init_xz: np.ndarray | None = None,
) -> Motion:
    """Scaled latents ``(1, N, D)`` -> :class:`Motion` of decoded frames ``[start, num_frames)``:
    the tokenizers decode each part, the normaliser restores units, the BEAT2 layout merges the
    parts. The root path starts at the origin; with ``init_xz (2,)`` (a stream continuing
    from earlier frames) it starts there and the first kept frame's step is walked too."""
    parts = tokenizer.decode(latents, frames=(start, num_frames))
    parts = {k: v[0].float().cpu() for k, v in parts.items()}
    parts = normalizer.denormalize(parts)
    merged = BodyPartLayout.beat2().merge(parts)
    poses = rot6d_to_axis_angle(merged.rot.double()).float().numpy()
    T = poses.shape[0]
    if merged.trans_v is not None:
        trans_v = merged.trans_v.double()
        if init_xz is None:
            trans = velocity_to_trans(trans_v).numpy()
        else:  # velocity_to_trans skips frame 0's step: give it a dummy frame 0
            padded = torch.cat([trans_v[:1], trans_v])
            trans = velocity_to_trans(padded, torch.as_tensor(init_xz))[1:].numpy()
    else:
        trans = np.zeros((T, 3))
    face = merged.face.double().numpy() if merged.face is not None else np.zeros((T, 100))
    return Motion(np.ascontiguousarray(poses, np.float32), trans, face)
