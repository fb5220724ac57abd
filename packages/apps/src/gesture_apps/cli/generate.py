"""`gesture generate`: speech -> motion with any exported bundle; with an Omniges bundle any of
its six tasks (``--task t2g|g2t|a2g|g2a|t2a|a2t``); with a T2M-GPT bundle an utterance or
caption -> HumanML3D motion (``--bundle DIR --text ... --out motion.npy|.mp4``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from gesture_apps.errors import CLIError


def add_generate_command(sub) -> None:
    """Register ``gesture generate``."""
    gen = sub.add_parser(
        "generate",
        help="generate gestures for a speech recording",
        description=(
            "Sliding-window generation with seed frames and no dropped tail: the output has "
            "floor(audio seconds x 30) frames, written as a BEAT2 npz (poses (T,165) axis-angle, "
            "trans, expressions, betas, model, gender, mocap_frame_rate). Audio must be mono "
            "16 kHz wav, at least 1 s."
        ),
    )
    gen.add_argument("--audio", help="speech, mono 16 kHz wav (required unless --task says)")
    gen.add_argument(
        "--task",
        help="Omniges bundles: t2g, g2t, a2g (default), g2a, t2a or a2t; the condition is "
        "--prompt (t), --audio (a) or --gesture (g), --out is .npz (g), .wav (a) or .txt (t)",
    )
    gen.add_argument("--prompt", help="Omniges text condition (t2g, t2a); OmniHuman caption")
    gen.add_argument("--reference", help="OmniHuman: the image to animate (the bundle's size)")
    gen.add_argument(
        "--pose", help="OmniHuman: keypoints .npz (keypoints (T, K, 2) in [0, 1], confidence)"
    )
    gen.add_argument(
        "--mode",
        help="OmniHuman condition set: audio (default), pose (default with --pose), pose_only, "
        "reference",
    )
    gen.add_argument("--gesture", help="Omniges gesture condition: a BEAT2 .npz (g2t, g2a)")
    gen.add_argument(
        "--text", help="T2M-GPT bundles: the utterance or caption to move to (--out .npy or .mp4)"
    )
    gen.add_argument(
        "--gt",
        help="T2M-GPT bundles with --out .mp4: ground truth drawn beside the generated motion, "
        "a .npy of HumanML3D features (T, 263) or joints (T, 22, 3)",
    )
    gen.add_argument(
        "--smplx-model",
        metavar="PATH",
        help="T2M-GPT bundles with --out .mp4: draw SMPL-X meshes fitted to the joints instead "
        "of skeletons (SMPLX_NEUTRAL.npz or its folder)",
    )
    gen.add_argument("--seconds", type=float, help="Omniges: output length for a text condition")
    gen.add_argument("--textgrid", help="word alignment (Praat TextGrid with a 'words' tier)")
    gen.add_argument(
        "--seg-dir",
        help="Semantic Gesticulator bundles: gesture folder (SeG_dataset: SeG_list.xlsx + bvh/) "
        "whose gestures are retrieved for the words and injected",
    )
    gen.add_argument(
        "--llm-url",
        help="Semantic Gesticulator bundles: OpenAI-compatible endpoint for gesture retrieval "
        "(sentence embeddings when absent or failing)",
    )
    gen.add_argument(
        "--checkpoint",
        "--bundle",
        dest="checkpoint",
        required=True,
        help="an exported bundle, or a `gesture train ...` run or checkpoint folder",
    )
    gen.add_argument(
        "--steps", type=int, help="sampling steps, 1 to 1000 (default: the model's, 2)"
    )
    gen.add_argument("--guidance", type=float, help="classifier-free guidance (default 2)")
    gen.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    gen.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 networks: ~1.4x faster on CPUs with bf16 units, rotations within degrees",
    )
    gen.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:1... (default: cuda when present, else cpu)"
    )
    gen.add_argument("--out", required=True, help="output .npz (Omniges: .npz, .wav or .txt)")
    gen.add_argument(
        "--render", metavar="VIDEO", help="also draw a stick figure: .mp4 (with audio) or .gif"
    )
    gen.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from gesture_apps.data.motion import write_beat2_npz
    from gesture_apps.runtime.bundle import open_bundle
    from gesture_apps.runtime.registry import generator_of

    out = Path(args.out)
    t2m = _t2m_bundle(args.checkpoint)
    if t2m is not None:
        return _generate_t2m(args, t2m)
    for flag in ("text", "gt", "smplx_model"):
        if getattr(args, flag) is not None:
            raise CLIError(f"--{flag.replace('_', '-')}: only T2M-GPT bundles take it")
    try:  # the bundle generation reads whole (config, weights, normaliser, tokenizer)
        bundle = open_bundle(args.checkpoint)
        export, system = bundle.folder, bundle.system
    except ValueError:
        export, system = None, "gesturelsm"  # reported when loading, after the audio is checked
        try:  # an Omniges run or checkpoint folder holds its bundle in omniges/
            bundle = open_bundle(args.checkpoint, "omniges")
            export, system = bundle.folder, bundle.system
        except ValueError:
            pass
    if system not in ("omniges", "omnihuman", "semantic_gesticulator"):
        try:  # a Semantic Gesticulator run holds its bundle in semantic_gesticulator/
            bundle = open_bundle(args.checkpoint, "semantic_gesticulator")
            export, system = bundle.folder, bundle.system
        except ValueError:
            pass
    if system == "semantic_gesticulator":
        return _generate_sg(args, export)
    for flag in ("seg_dir", "llm_url"):
        if getattr(args, flag) is not None:
            raise CLIError(
                f"--{flag.replace('_', '-')}: only Semantic Gesticulator bundles take it "
                f"(this is {system!r})"
            )
    if system not in ("omniges", "omnihuman"):
        try:  # an OmniHuman run or checkpoint folder holds its bundle in omnihuman/
            bundle = open_bundle(args.checkpoint, "omnihuman")
            export, system = bundle.folder, bundle.system
        except ValueError:
            pass
    if system == "omniges":
        return _generate_omniges(args, export)
    if system == "omnihuman":
        from gesture_apps.cli.generate_video import generate_omnihuman

        return generate_omnihuman(args, export)
    for flag in ("task", "prompt", "gesture", "seconds", "reference", "pose", "mode"):
        if getattr(args, flag) is not None:
            raise CLIError(
                f"--{flag}: only Omniges or OmniHuman bundles take it (this is {system!r})"
            )
    if args.audio is None:
        raise CLIError("--audio: required (the speech to generate gestures for)")
    if out.suffix != ".npz" or out.is_dir():
        raise CLIError(f"--out {out}: expected a .npz file name")
    from gesture_apps.runtime.paths import check_output
    from gesture_apps.systems.gesturelsm.pipeline import MAX_STEPS

    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise CLIError(f"--steps must be between 1 and {MAX_STEPS}, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    if args.render and Path(args.render).suffix.lower() not in (".mp4", ".gif"):
        raise CLIError(f"--render {args.render}: expected a .mp4 or .gif file name")
    inputs = [("--audio", args.audio), ("--textgrid", args.textgrid)]
    generate = generator_of(system)
    for flag, path in (("--out", out), ("--render", args.render)):
        if path is not None:
            check_output(
                path,
                flag,
                files=inputs,
                folders=[("--checkpoint", export)],
                keep=[("--checkpoint", args.checkpoint)],
            )
    motion = generate(
        args.audio,
        checkpoint=args.checkpoint,
        textgrid=args.textgrid,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
    )
    seconds = motion.num_frames / motion.fps
    shown = f"generate: {motion.num_frames} frames ({seconds:.2f} s) -> {out}"
    if args.render:  # first, so that a failed render leaves no npz behind
        from gesture_apps.data.motion import render_video
        from gesture_apps.data.speech import read_audio

        render_video(args.render, motion, read_audio(args.audio))
        shown += f", {args.render}"
    write_beat2_npz(out, motion)
    print(shown)
    return 0


def _generate_sg(args: argparse.Namespace, export: Path) -> int:
    """``gesture generate`` with a Semantic Gesticulator bundle: ``--audio`` (+ ``--textgrid``,
    ``--seg-dir``, ``--llm-url``) -> ``--out`` motion (.npz or .bvh) and
    ``<out>.gestures.json`` (the injected gestures)."""
    from gesture_apps.runtime.paths import check_output
    from gesture_apps.systems.semantic_gesticulator.pipeline import gestures_path

    other = ("task", "prompt", "gesture", "seconds", "reference", "pose", "mode", "text", "gt")
    extra = [f"--{f}" for f in other if getattr(args, f) is not None]
    extra += [f"--{f}" for f in ("steps", "guidance", "render", "bf16") if getattr(args, f)]
    if extra:
        raise CLIError(f"{', '.join(extra)}: Semantic Gesticulator bundles do not take it")
    if args.audio is None:
        raise CLIError("--audio: required (the speech to generate gestures for)")
    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".bvh") or out.is_dir():
        raise CLIError(f"--out {out}: expected a .npz or .bvh file name")
    if args.seg_dir is not None and not Path(args.seg_dir).is_dir():
        raise CLIError(f"--seg-dir {args.seg_dir}: folder not found")
    if args.llm_url is not None and args.seg_dir is None:
        raise CLIError("--llm-url: needs --seg-dir (the gestures to retrieve from)")
    inputs = [("--audio", args.audio), ("--textgrid", args.textgrid)]
    for path in (out, gestures_path(out)):
        check_output(
            path,
            "--out",
            files=[i for i in inputs if i[1]],
            folders=[("--checkpoint", export), ("--seg-dir", args.seg_dir)],
        )
    from gesture_apps.systems.semantic_gesticulator.pipeline import generate

    motion, gestures = generate(
        args.audio,
        checkpoint=export,
        textgrid=args.textgrid,
        seg_dir=args.seg_dir,
        llm_url=args.llm_url,
        seed=args.seed,
        device=args.device,
        out=out,
    )
    shown = ", ".join(f"{g['label']} at {g['time']:.2f} s" for g in gestures) or "none"
    print(
        f"generate: {motion.num_frames} frames ({motion.num_frames / motion.fps:.2f} s) -> {out}, "
        f"{gestures_path(out)} (gestures: {shown})"
    )
    return 0


OUT_SUFFIX = {"g": ".npz", "a": ".wav", "t": ".txt"}
CONDITION = {"t": "prompt", "a": "audio", "g": "gesture"}


def _generate_omniges(args: argparse.Namespace, export: Path) -> int:
    """``gesture generate`` with an Omniges bundle: one task, its condition, one output."""
    from gesture_apps.runtime.paths import check_output
    from gesture_apps.systems.omniges.config import TASKS

    task = args.task or "a2g"
    if task not in TASKS:
        raise CLIError(f"--task: expected one of {', '.join(TASKS)}, found {task!r}")
    src, dst = task[0], task[2]
    need = CONDITION[src]
    if getattr(args, need) is None:
        raise CLIError(f"--{need}: task {task} needs it (the condition)")
    extra = [f"--{c}" for k, c in CONDITION.items() if k != src and getattr(args, c) is not None]
    extra += [f"--{f}" for f in ("textgrid", "reference", "pose", "mode") if getattr(args, f)]
    if extra:
        raise CLIError(f"{', '.join(extra)}: task {task} only takes --{need}")
    out = Path(args.out)
    if out.suffix.lower() != OUT_SUFFIX[dst] or out.is_dir():
        raise CLIError(f"--out {out}: task {task} writes a {OUT_SUFFIX[dst]} file")
    if args.render and dst != "g":
        raise CLIError(f"--render: task {task} generates no motion")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise CLIError(f"--steps must be between 1 and 1000, found {args.steps}")
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise CLIError(f"--guidance must be a finite number, found {args.guidance}")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise CLIError(f"--seconds must be a positive number, found {args.seconds}")
    if args.render and Path(args.render).suffix.lower() not in (".mp4", ".gif"):
        raise CLIError(f"--render {args.render}: expected a .mp4 or .gif file name")
    inputs = [("--audio", args.audio), ("--gesture", args.gesture)]
    for flag, path in (("--out", out), ("--render", args.render)):
        if path is not None:
            check_output(
                path, flag, files=[i for i in inputs if i[1]], folders=[("--checkpoint", export)]
            )
    condition = {}
    if src == "a":
        from gesture_apps.data.speech import read_audio

        condition["audio"] = read_audio(args.audio)
    elif src == "g":
        from gesture_data.motion import MotionFileError, read_beat2_npz

        try:
            condition["gesture"] = read_beat2_npz(args.gesture)
        except MotionFileError as e:
            raise CLIError(f"--gesture: {e}") from None
    else:
        if not args.prompt.strip():
            raise CLIError("--prompt: expected some text")
        condition["prompt"] = args.prompt
    from gesture_apps.systems.omniges.pipeline import OmnigesPipeline

    pipe = OmnigesPipeline.from_pretrained(export, device=args.device)
    result = pipe(
        task,
        **condition,
        seconds=args.seconds,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    if dst == "g":
        from gesture_apps.data.motion import write_beat2_npz

        motion = result.motion
        shown = f"generate {task}: {motion.num_frames} frames -> {out}"
        if args.render:
            from gesture_apps.data.motion import render_video

            render_video(args.render, motion, condition.get("audio"))
            shown += f", {args.render}"
        write_beat2_npz(out, motion)
    elif dst == "a":
        import soundfile as sf

        from motion_tokenizers.io import atomic_write

        sr = int(pipe.spec["sample_rate"])
        atomic_write(out, lambda p: sf.write(str(p), result.audio, sr, format="WAV"))
        shown = f"generate {task}: {result.audio.size / sr:.2f} s of audio -> {out}"
    else:
        from motion_tokenizers.io import atomic_write

        text = result.text + "\n"
        atomic_write(out, lambda p: p.write_text(text, encoding="utf-8"))
        shown = f"generate {task}: {result.text!r} -> {out}"
    print(shown)
    return 0


def _t2m_bundle(path: str) -> Path | None:
    """The folder of the T2M-GPT bundle at ``path`` (a bundle, run or checkpoint), else None."""
    from gesture_apps.runtime.bundle import open_bundle

    try:
        bundle = open_bundle(path, "t2m_gpt")
    except ValueError:
        return None
    return bundle.folder if bundle.system == "t2m_gpt" else None


def _generate_t2m(args: argparse.Namespace, export: Path) -> int:
    """``gesture generate`` with a T2M-GPT bundle: ``--text`` -> ``--out`` features ``.npy``
    (``(T, 263)``, joints ``(T, 22, 3)`` beside it as ``<name>_joints.npy``) or a skeleton
    ``.mp4`` (generated | ground truth with ``--gt``; SMPL-X meshes fitted to the joints with
    ``--smplx-model``)."""
    import numpy as np

    from gesture_apps.runtime.paths import check_output

    other = ("audio", "task", "prompt", "gesture", "seconds", "reference", "pose", "mode")
    extra = [f"--{f}" for f in other if getattr(args, f) is not None]
    extra += [f"--{f}" for f in ("textgrid", "steps", "guidance", "render") if getattr(args, f)]
    if extra:
        raise CLIError(f"{', '.join(extra)}: T2M-GPT bundles take --text (and --gt, --seed)")
    if args.text is None or not args.text.strip():
        raise CLIError("--text: required, the utterance or caption to generate motion for")
    out = Path(args.out)
    kind = out.suffix.lower()
    if kind not in (".npy", ".mp4") or out.is_dir():
        raise CLIError(f"--out {out}: expected a .npy (features) or .mp4 (video) file name")
    for flag in ("gt", "smplx_model"):
        if getattr(args, flag) is not None and kind != ".mp4":
            raise CLIError(f"--{flag.replace('_', '-')}: only drawn into an .mp4 (--out VIDEO.mp4)")
    if args.smplx_model is not None and not Path(args.smplx_model).exists():
        raise CLIError(f"--smplx-model {args.smplx_model}: no such file or folder")
    gt = _read_gt(Path(args.gt)) if args.gt is not None else None
    joints_out = out.with_name(f"{out.stem}_joints.npy")
    outs = [out] if kind == ".mp4" else [out, joints_out]
    for path in outs:
        files = [("--gt", args.gt)] if args.gt else []
        check_output(path, "--out", files=files, folders=[("--bundle", export)])
    from gesture_apps.systems.t2m_gpt.pipeline import T2MPipeline
    from gesture_data.datasets.humanml3d import recover_from_ric
    from motion_tokenizers.io import atomic_write

    pipe = T2MPipeline.from_pretrained(export, device=args.device)
    feats = pipe([args.text], seed=args.seed)[0]
    joints = recover_from_ric(feats.astype(np.float64)).astype(np.float32)
    seconds = len(feats) / pipe.fps
    if kind == ".mp4":
        motions, titles = [joints], ["generated"]
        if gt is not None:
            motions, titles = [joints, gt], ["generated", "ground truth"]
        if args.smplx_model is not None:  # meshes fitted to the joints (a few s per motion)
            from gesture_data.render_smpl import render_joints_mesh_video

            render_joints_mesh_video(motions, args.smplx_model, out, fps=pipe.fps, titles=titles)
        else:
            from gesture_data.render import render_joints_video

            render_joints_video(motions, out, fps=pipe.fps, titles=titles)
        print(f"generate: {len(feats)} frames ({seconds:.2f} s) -> {out}")
        return 0

    def save(arr):
        def write(p: Path) -> None:
            with open(p, "wb") as f:  # a file object: np.save would append ".npy" to the name
                np.save(f, arr, allow_pickle=False)

        return write

    atomic_write(out, save(feats))
    atomic_write(joints_out, save(joints))
    print(f"generate: {len(feats)} frames ({seconds:.2f} s) -> {out}, {joints_out}")
    return 0


def _read_gt(path: Path):
    """Ground-truth joints ``(T, 22, 3)`` from a features ``(T, 263)`` or joints ``.npy``."""
    import numpy as np

    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CLIError(f"--gt {path}: file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise CLIError(f"--gt {path}: not a readable .npy ({' '.join(str(e).split())})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu" or not np.isfinite(a).all():
        raise CLIError(f"--gt {path}: expected finite numbers")
    if a.ndim == 2 and a.shape[1] == 263 and len(a) > 0:
        from gesture_data.datasets.humanml3d import recover_from_ric

        return recover_from_ric(a.astype(np.float64)).astype(np.float32)
    if a.ndim == 3 and a.shape[1:] == (22, 3) and len(a) > 0:
        return a.astype(np.float32)
    raise CLIError(f"--gt {path}: expected shape (T, 263) or (T, 22, 3), found {a.shape}")
