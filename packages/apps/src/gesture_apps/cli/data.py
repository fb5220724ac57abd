"""``gesture data``: dataset construction commands.

``gesture data ktubeum build`` turns per-frame SMPL-X estimator json into a HumanML3D-layout
KTubeUM dataset (resumable, bad frames reported and dropped), ``preview`` renders clips of a
built dataset to mp4, ``synth`` writes the synthetic Korean estimator-json corpus (KTubeUM's
raw json is not public).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gesture_apps.errors import CLIError


def add_data_command(sub) -> None:
    """Register ``gesture data`` on the top-level subparsers."""
    p = sub.add_parser("data", help="build and preview datasets (KTubeUM)")
    groups = p.add_subparsers(dest="dataset", metavar="DATASET")
    p.set_defaults(func=_needs_sub(p))
    k = groups.add_parser(
        "ktubeum",
        help="KTubeUM: per-frame SMPL-X json -> HumanML3D-layout dataset",
        description=(
            "KTubeUM (Korean utterance-to-motion) construction: per-frame SMPL-X estimator json "
            "(smplx_root_pose, smplx_body_pose, smplx_lhand_pose, smplx_rhand_pose, "
            "smplx_jaw_pose, smplx_shape, smplx_expr, cam_trans; OSX / Hand4Whole style) -> npz "
            "(root fixed, low-pass filtered) -> joints -> 263-d features, Mean/Std, splits, "
            "texts, new_joints, new_joint_vecs."
        ),
    )
    k.set_defaults(func=_needs_sub(k))
    cmds = k.add_subparsers(dest="action", metavar="ACTION")

    b = cmds.add_parser(
        "build",
        help="build the dataset (resumable)",
        description=(
            "Build a KTubeUM dataset from --json (one folder of per-frame json per clip). "
            "Finished clips are skipped on a rerun when their inputs are unchanged; bad frames "
            "(corrupt json, missing key, NaN, wrong length) are dropped and listed. Joints come "
            "from --smplx-model (SMPLX_NEUTRAL.npz or its folder) or, without it, from "
            "gesture_data's approximate rest skeleton (no body shape)."
        ),
    )
    b.add_argument("--json", required=True, metavar="DIR", help="per-clip folders of json")
    b.add_argument("--out", required=True, metavar="DIR", help="dataset folder")
    b.add_argument("--smplx-model", metavar="PATH", help="SMPL-X model npz or folder")
    b.add_argument(
        "--texts", metavar="DIR", help="<clip>.txt transcripts (default: texts/ beside --json)"
    )
    b.add_argument("--language", default="ko", help="transcript language (default ko)")
    b.add_argument("--fps", type=float, default=30.0, help="video frame rate (default 30)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    v = cmds.add_parser(
        "preview",
        help="render clips of a built dataset to mp4",
        description=(
            "Render clips of a built dataset to <out>/<clip>.mp4: a skeleton video of "
            "new_joints (20 fps), or with --smplx-model an SMPL-X mesh video of npz/<clip>.npz "
            "(the dataset's frame rate)."
        ),
    )
    v.add_argument("--data", required=True, metavar="DIR", help="built dataset folder")
    v.add_argument("--out", required=True, metavar="DIR", help="folder for the videos")
    v.add_argument("--ids", nargs="+", metavar="ID", help="clip ids (default: all.txt)")
    v.add_argument("--smplx-model", metavar="PATH", help="SMPL-X model npz or folder")
    v.add_argument("--size", type=int, default=320, help="panel width and height (default 320)")
    v.set_defaults(func=cmd_preview)

    s = cmds.add_parser(
        "synth",
        help="write the synthetic Korean per-frame json corpus",
        description=(
            "Write <out>/json/<clip>/<frame>.json (estimator-style SMPL-X with jitter and a "
            "drifting camera), <out>/texts/<clip>.txt and <out>/wav/<clip>.wav for synthetic "
            "Korean clips (eSpeak NG speech, motion following the words)."
        ),
    )
    s.add_argument("--out", required=True, metavar="DIR", help="corpus folder")
    s.add_argument("--clips", type=int, required=True, help="number of clips")
    s.add_argument("--seconds", type=float, default=4.0, help="seconds per clip (default 4)")
    s.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    s.set_defaults(func=cmd_synth)


def _needs_sub(parser: argparse.ArgumentParser):
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        print(f"gesture: error: {parser.prog} needs a subcommand", file=sys.stderr)
        return 2

    return show


def _existing_dir(path: str, flag: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise CLIError(f"{flag} {p}: no such folder")
    return p


def cmd_build(args: argparse.Namespace) -> int:
    json_root = _existing_dir(args.json, "--json")
    texts = _existing_dir(args.texts, "--texts") if args.texts else None
    if args.smplx_model and not Path(args.smplx_model).exists():
        raise CLIError(f"--smplx-model {args.smplx_model}: no such file or folder")
    if not args.fps > 0:
        raise CLIError(f"--fps must be positive, found {args.fps}")
    from tqdm.auto import tqdm

    from gesture_data.datasets import ktubeum

    bars = []  # made at the first clip, so an input error prints no empty bar first

    def progress(done: int, total: int, clip_id: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="ktubeum", unit="clip", disable=args.no_progress))
        bars[0].set_postfix_str(clip_id)
        bars[0].update(1)

    try:
        report = ktubeum.build_dataset(
            json_root,
            args.out,
            smplx_model=args.smplx_model,
            texts=texts,
            fps=args.fps,
            language=args.language,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    for line in report.bad_frame_lines():
        print(line)
    print(report.summary())
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    data = _existing_dir(args.data, "--data")
    if not 64 <= args.size <= 2048:
        raise CLIError(f"--size must be between 64 and 2048, found {args.size}")
    if args.smplx_model and not Path(args.smplx_model).exists():
        raise CLIError(f"--smplx-model {args.smplx_model}: no such file or folder")
    from gesture_data.datasets.humanml3d import FPS, HumanML3DReader

    reader = HumanML3DReader(data)
    ids = args.ids or reader.ids("all")
    out = Path(args.out)
    size = (args.size, args.size)
    for cid in ids:
        path = out / f"{cid}.mp4"
        if args.smplx_model:
            from gesture_data.render_smpl import render_smpl_video

            poses, betas, fps = _built_npz(data / "npz" / f"{cid}.npz", cid)
            render_smpl_video(
                [poses], args.smplx_model, path, fps=fps, size=size, betas=[betas]
            )  # fmt: skip
        else:
            from gesture_data.render import render_joints_video

            render_joints_video([reader.joints(cid)], path, fps=FPS, titles=[cid], size=size)
        print(f"preview: {cid} -> {path}")
    return 0


def _built_npz(path: Path, cid: str):
    """``(poses (T, 165), betas, fps)`` of a build's ``npz/<clip>.npz`` (its 10 expression
    coefficients are the estimator's, not BEAT2's 100, so the BEAT2 reader does not apply)."""
    import zipfile

    import numpy as np

    if not path.is_file():
        raise CLIError(f"{path}: no such npz (clip {cid!r} not built?)")
    try:
        with np.load(path, allow_pickle=False) as z:
            poses = np.asarray(z["poses"], np.float32)
            betas = np.asarray(z["betas"], np.float32) if "betas" in z.files else None
            fps = float(z["mocap_frame_rate"]) if "mocap_frame_rate" in z.files else 30.0
    except KeyError:
        raise CLIError(f"{path}: key 'poses' missing") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CLIError(f"{path}: corrupt npz: {type(e).__name__}: {e}") from None
    if poses.ndim != 2 or poses.shape[1] != 165 or not np.isfinite(poses).all():
        raise CLIError(f"{path}: key 'poses': expected finite (T, 165), found {poses.shape}")
    if not fps > 0:
        raise CLIError(f"{path}: key 'mocap_frame_rate': expected > 0, found {fps}")
    return poses, betas, fps


def cmd_synth(args: argparse.Namespace) -> int:
    if args.clips < 1:
        raise CLIError(f"--clips must be at least 1, found {args.clips}")
    if not 1.0 <= args.seconds <= 600:
        raise CLIError(f"--seconds must be between 1 and 600, found {args.seconds}")
    from gesture_data.datasets import ktubeum

    ids = ktubeum.write_synthetic_pose_jsons(
        args.out, num_clips=args.clips, seconds=args.seconds, seed=args.seed, language="ko"
    )
    print(f"synth: {len(ids)} clips -> {Path(args.out) / 'json'}")
    return 0
