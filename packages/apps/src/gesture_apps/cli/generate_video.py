"""``gesture generate`` with an OmniHuman bundle: reference image + speech (+ pose) -> mp4."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from gesture_apps.errors import CLIError

MODES = ("audio", "pose", "pose_only", "reference")


def read_image(path: str | Path, flag: str = "--reference") -> np.ndarray:
    """An RGB image file -> ``(H, W, 3)`` uint8 (alpha dropped, grey expanded)."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{flag} {p}: file not found")
    try:
        with Image.open(p) as im:
            img = np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
    except Exception as e:  # imageio raises several types for unreadable files
        raise CLIError(f"{flag} {p}: cannot read image ({type(e).__name__}: {e})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or img.dtype != np.uint8:
        raise CLIError(f"{flag} {p}: expected an 8-bit RGB image, found {img.shape} {img.dtype}")
    return np.ascontiguousarray(img[..., :3])


def read_pose(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``--pose`` npz: ``keypoints`` ``(T, K, 2)`` in ``[0, 1]`` of width / height and an
    optional ``confidence`` ``(T, K)``."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--pose {p}: file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # zipfile / numpy errors for corrupt or truncated files
        raise CLIError(f"--pose {p}: cannot read npz ({type(e).__name__}: {e})") from None
    if "keypoints" not in data:
        raise CLIError(f"--pose {p}: missing field 'keypoints' (T, K, 2)")
    kp = data["keypoints"].astype(np.float32)
    if kp.ndim != 3 or kp.shape[-1] != 2 or not np.isfinite(kp).all():
        raise CLIError(
            f"--pose {p}: field 'keypoints': expected finite (T, K, 2), found {kp.shape}"
        )
    conf = data.get("confidence")
    if conf is not None and conf.shape != kp.shape[:2]:
        raise CLIError(
            f"--pose {p}: field 'confidence': expected {kp.shape[:2]}, found {conf.shape}"
        )
    return kp, None if conf is None else conf.astype(np.float32)


def generate_omnihuman(args: argparse.Namespace, export: Path) -> int:
    """Write ``--out`` (mp4 with the speech) from ``--reference``, ``--audio``, ``--pose``."""
    from gesture_apps.runtime.paths import check_output

    out = Path(args.out)
    if out.suffix.lower() != ".mp4" or out.is_dir():
        raise CLIError(f"--out {out}: an OmniHuman bundle writes a .mp4 video")
    for flag in ("task", "gesture", "seconds", "textgrid", "render"):
        if getattr(args, flag, None) is not None:
            raise CLIError(f"--{flag}: OmniHuman bundles do not take it")
    if args.reference is None:
        raise CLIError("--reference: required (the image of the person to animate)")
    mode = args.mode or ("pose" if args.pose else "audio")
    if mode not in MODES:
        raise CLIError(f"--mode: expected one of {', '.join(MODES)}, found {mode!r}")
    if "pose" in mode and args.pose is None:
        raise CLIError(f"--pose: mode {mode} needs a keypoint file")
    if mode != "pose_only" and mode != "reference" and args.audio is None:
        raise CLIError(f"--audio: mode {mode} needs the speech")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise CLIError(f"--steps must be between 1 and 1000, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    inputs = [("--audio", args.audio), ("--reference", args.reference), ("--pose", args.pose)]
    check_output(
        out, "--out", files=[i for i in inputs if i[1]], folders=[("--checkpoint", export)]
    )
    reference = read_image(args.reference)
    audio = None
    if args.audio is not None:
        from gesture_apps.data.speech import read_audio

        audio = read_audio(args.audio)
    kp = conf = None
    if args.pose is not None:
        kp, conf = read_pose(args.pose)
    from gesture_apps.systems.omnihuman.pipeline import OmniHumanPipeline, Request

    pipe = OmniHumanPipeline.from_pretrained(export, device=args.device)
    request = Request(
        reference=reference,
        audio=audio,
        keypoints=kp,
        confidence=conf,
        prompt=args.prompt or "",
    )
    guidance = {} if args.guidance is None else {"audio_guidance": args.guidance}
    (video,) = pipe.generate(
        [request], mode=mode, steps=args.steps, seed=args.seed, progress=True, **guidance
    )
    from gesture_data.video import write_video

    write_video(out, video, pipe.fps, audio=audio, sample_rate=16000 if audio is not None else None)
    print(
        f"generate ({mode}): {video.shape[0]} frames ({video.shape[0] / pipe.fps:.2f} s) -> {out}"
    )
    return 0
