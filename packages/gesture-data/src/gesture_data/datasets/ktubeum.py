"""KTubeUM construction as library functions.

Input is what monocular SMPL-X estimators (OSX / Hand4Whole style) write: one JSON per
video frame with ``smplx_root_pose (3)``, ``smplx_body_pose (63)``, ``smplx_lhand_pose
(45)``, ``smplx_rhand_pose (45)``, ``smplx_jaw_pose (3)``, ``smplx_shape (10)``,
``smplx_expr (10)`` and ``cam_trans (3)`` (nested lists are flattened). KTubeUM's own raw
json is not public; this is the format its README describes.

Pipeline: :func:`read_pose_jsons` -> :func:`pose_json_to_npz` (root fixed across frames,
zero-phase Butterworth low-pass on 6D rotations against estimator jitter, BEAT2-style npz)
-> :func:`~gesture_data.datasets.smplx_model.smplx_joints` -> first 22 joints ->
:func:`~gesture_data.datasets.humanml3d.write_dataset` (263-d vectors, Mean/Std, splits).

:func:`build_dataset` runs all of it over a folder of clips, resumably, dropping and
reporting bad frames (:func:`scan_pose_jsons`), into KTubeUM's layout: ``new_joint_vecs/``,
``new_joints/``, ``texts/``, ``Mean.npy``, ``Std.npy``, ``train/val/test/train_val/all.txt``
(plus ``npz/``, the filtered SMPL-X poses, and ``.build/``, per-clip manifests).
:func:`write_synthetic_pose_jsons` writes estimator-style json for the synthetic corpus.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, filtfilt

from .._io import atomic_path, write_text_atomic
from ..errors import DataError
from ..rotations import axis_angle_to_6d, rot6d_to_axis_angle

KEYS = {
    "smplx_root_pose": 3,
    "smplx_body_pose": 63,
    "smplx_lhand_pose": 45,
    "smplx_rhand_pose": 45,
    "smplx_jaw_pose": 3,
    "smplx_shape": 10,
    "smplx_expr": 10,
    "cam_trans": 3,
}


def _frame_number(p: Path) -> tuple:
    nums = re.findall(r"\d+", p.stem)
    return (int(nums[-1]) if nums else -1, p.name)


def _pose_files(files_or_dir) -> list[Path]:
    if isinstance(files_or_dir, str | Path):
        if not Path(files_or_dir).is_dir():
            raise DataError(files_or_dir, "no pose json files (folder missing)")
        files = sorted(Path(files_or_dir).glob("*.json"), key=_frame_number)
    else:
        files = [Path(f) for f in files_or_dir]
    if not files:
        raise DataError(
            files_or_dir if isinstance(files_or_dir, str | Path) else None, "no pose json files"
        )
    return files


def _read_frame(f: Path) -> dict[str, np.ndarray]:
    """One estimator json -> ``{key: (dim,)}`` float32, or a :class:`DataError` naming the
    file and key."""
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f, "pose json missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f, f"corrupt or truncated json: {e}") from None
    if not isinstance(d, dict):
        raise DataError(f, "top level must be an object", expected="dict", found=type(d).__name__)
    out = {}
    for k, dim in KEYS.items():
        if k not in d:
            raise DataError(f, "key missing", key=k, expected=f"{dim} values", found=None)
        try:
            raw = np.asarray(d[k])
        except (TypeError, ValueError):
            raise DataError(f, "not numeric", key=k) from None
        # bools and nulls would otherwise turn into 1.0 / NaN without a word
        if raw.dtype.kind not in "fi":
            raise DataError(f, "not numeric", key=k, expected="numbers", found=raw.dtype)
        a = raw.astype(np.float64).reshape(-1)
        if a.size != dim:
            raise DataError(f, "wrong size", key=k, expected=dim, found=a.size)
        if not np.isfinite(a).all() or np.abs(a).max(initial=0) > 1e30:
            raise DataError(f, "non-finite or absurd values", key=k)
        out[k] = a.astype(np.float32)
    return out


def read_pose_jsons(files_or_dir) -> dict[str, np.ndarray]:
    """Per-frame json files (or a folder of them, ordered by the last number in the name)
    -> ``{key: (T, dim)}`` float32. Any bad frame raises (see :func:`scan_pose_jsons` for
    the lenient reader the dataset build uses)."""
    frames = [_read_frame(f) for f in _pose_files(files_or_dir)]
    return {k: np.stack([fr[k] for fr in frames]) for k in KEYS}


@dataclass
class PoseScan:
    """What :func:`scan_pose_jsons` found: the good frames' arrays ``{key: (T_good, dim)}``,
    their files and frame numbers, one :class:`DataError` per bad file, and the gaps in the
    frame numbering ``[(first missing frame, count)]`` (bad files and absent numbers)."""

    arrays: dict[str, np.ndarray]
    files: list[Path]
    frames: list[int]
    bad: list[DataError]
    gaps: list[tuple[int, int]]
    total: int


def scan_pose_jsons(files_or_dir) -> PoseScan:
    """Read every frame, dropping (never repairing) bad ones: corrupt json, a missing key,
    NaN/inf, a wrong length. The kept frames are concatenated in order; an estimator that
    lost the speaker for a few frames leaves a gap, which is reported rather than
    interpolated, so no invented pose enters the dataset."""
    files = _pose_files(files_or_dir)
    good, kept, nums, bad = [], [], [], []
    for f in files:
        try:
            good.append(_read_frame(f))
        except DataError as e:
            bad.append(e)
            continue
        kept.append(f)
        nums.append(_frame_number(f)[0])
    arrays = {
        k: np.stack([fr[k] for fr in good]) if good else np.zeros((0, d), np.float32)
        for k, d in KEYS.items()
    }
    gaps = []
    all_nums = [_frame_number(f)[0] for f in files]
    lo = min(all_nums) if all_nums else 0
    prev = lo - 1
    for n in nums:
        if n > prev + 1:
            gaps.append((prev + 1, n - prev - 1))
        prev = max(prev, n)
    if all_nums and max(all_nums) > prev:
        gaps.append((prev + 1, max(all_nums) - prev))
    return PoseScan(arrays, kept, nums, bad, gaps, len(files))


def lowpass_rotations(aa: np.ndarray, fps: float, cutoff_hz: float, order: int = 4):
    """Zero-phase Butterworth low-pass of axis-angle ``(T, J*3)`` done on the 6D form (no
    wrap-around at +-pi), re-orthonormalised back to axis-angle."""
    T = aa.shape[0]
    if cutoff_hz <= 0 or cutoff_hz >= fps / 2 or 3 * (order + 1) > T:
        return aa
    d6 = axis_angle_to_6d(torch.from_numpy(aa).double()).numpy()
    b, a = butter(order, cutoff_hz / (fps / 2))
    d6 = filtfilt(b, a, d6, axis=0, padlen=min(3 * max(len(a), len(b)), T - 1))
    return (
        rot6d_to_axis_angle(torch.from_numpy(np.ascontiguousarray(d6))).numpy().astype(np.float32)
    )


def pose_json_to_npz(
    files_or_dir,
    out_path: str | Path,
    *,
    fps: float = 30.0,
    cutoff_hz: float = 6.0,
    fix_root: bool = True,
    root_height: float = 1.3,
) -> dict[str, np.ndarray]:
    """Per-frame estimator json -> BEAT2-layout npz (``poses (T,165)``, ``trans``,
    ``expressions``, ``betas``, ``mocap_frame_rate``), written atomically; returns the arrays.

    With ``fix_root`` the root orientation is the first frame's for every frame and the
    translation constant (``(0, root_height, 0)``): a monocular camera's depth and global
    rotation estimates are too noisy for a seated/standing speaker. Rotations are
    low-passed at ``cutoff_hz``; body shape is the median over frames."""
    return estimates_to_npz(
        read_pose_jsons(files_or_dir),
        out_path,
        fps=fps,
        cutoff_hz=cutoff_hz,
        fix_root=fix_root,
        root_height=root_height,
    )


def estimates_to_npz(
    d: dict[str, np.ndarray],
    out_path: str | Path,
    *,
    fps: float = 30.0,
    cutoff_hz: float = 6.0,
    fix_root: bool = True,
    root_height: float = 1.3,
) -> dict[str, np.ndarray]:
    """:func:`pose_json_to_npz` on arrays already read (``{key: (T, dim)}``, e.g.
    :attr:`PoseScan.arrays`)."""
    T = d["smplx_body_pose"].shape[0]
    poses = np.zeros((T, 165), np.float32)
    poses[:, 0:3] = d["smplx_root_pose"]
    poses[:, 3:66] = d["smplx_body_pose"]
    poses[:, 66:69] = d["smplx_jaw_pose"]
    poses[:, 75:120] = d["smplx_lhand_pose"]
    poses[:, 120:165] = d["smplx_rhand_pose"]
    poses = lowpass_rotations(poses, fps, cutoff_hz)
    if fix_root:
        poses[:, 0:3] = poses[0, 0:3]
        trans = np.tile(np.array([0.0, root_height, 0.0]), (T, 1))
    else:
        trans = d["cam_trans"].astype(np.float64)
    betas = np.zeros(300, np.float32)
    betas[:10] = np.median(d["smplx_shape"], axis=0)
    out = dict(
        poses=poses,
        trans=trans,
        expressions=d["smplx_expr"].astype(np.float64),
        betas=betas,
        model=np.array("smplx2020"),
        gender=np.array("neutral"),
        mocap_frame_rate=np.int32(round(fps)),
    )
    with atomic_path(out_path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
    return out


def npz_to_humanml3d_joints(
    poses: np.ndarray,
    model_path=None,
    betas=None,
    *,
    src_fps=30.0,
    dst_fps=20.0,
    target_offsets=None,
) -> np.ndarray:
    """SMPL-X poses ``(T, 165)`` -> HumanML3D's 22 joints ``(T', 22, 3)`` at ``dst_fps``
    (linear interpolation in time), through the user's SMPL-X model; re-targeted to
    ``target_offsets (22, 3)`` (see :func:`humanml3d.uniform_skeleton`) when given.

    Without ``model_path`` the joints come from the built-in approximate rest skeleton
    (:func:`gesture_data.skeleton.smplx_joints_approx`, no body shape: ``betas`` is ignored).
    SMPL-X files are licensed, so this keeps the build runnable without one; with the real
    model the bone lengths (and so the 263-d features) follow the speaker's shape."""
    from .humanml3d import uniform_skeleton

    if model_path is None:
        from ..skeleton import smplx_joints_approx

        poses = np.asarray(poses, np.float32)
        if poses.ndim != 2 or poses.shape[1] != 165 or not np.isfinite(poses).all():
            raise DataError(
                None,
                "wrong or non-finite poses",
                key="poses",
                expected="(T, 165)",
                found=poses.shape,
            )
        j = smplx_joints_approx(torch.from_numpy(poses).double()).numpy()[:, :22]
        j = j.astype(np.float32)
    else:
        from .smplx_model import smplx_joints

        j = smplx_joints(poses, model_path, betas=None if betas is None else betas[:10])[:, :22]
    if target_offsets is not None:
        j = uniform_skeleton(j, target_offsets).astype(np.float32)
    if src_fps == dst_fps:
        return j
    t_old = np.arange(j.shape[0]) / src_fps
    t_new = np.arange(int(np.floor(t_old[-1] * dst_fps)) + 1) / dst_fps
    flat = j.reshape(j.shape[0], -1)
    out = np.stack([np.interp(t_new, t_old, flat[:, i]) for i in range(flat.shape[1])], 1)
    return out.reshape(-1, 22, 3).astype(np.float32)


# --- synthetic estimator output ------------------------------------------------------------
def write_synthetic_pose_jsons(
    root: str | Path, *, num_clips: int, seconds: float, seed: int = 0, language: str = "ko"
) -> list[str]:
    """Write what a monocular SMPL-X estimator would have produced for the synthetic
    corpus' clips (:func:`~gesture_data.datasets.synthetic.make_clip`), since KTubeUM's raw
    json is not public: ``root/json/<clip>/<frame:06d>.json`` (the :data:`KEYS`, root pose
    nested ``[[x, y, z]]`` and body pose as 21 triples, as OSX writes them),
    ``root/texts/<clip>.txt`` (the utterance) and ``root/wav/<clip>.wav`` (its speech).

    The estimate is the clip's motion plus seeded per-frame jitter (0.02 rad on every joint,
    0.05 rad on the root) and a drifting camera translation, so the build's low-pass filter
    and root fix have something to remove. Deterministic in the arguments. Returns the ids."""
    import soundfile as sf

    from .synthetic import make_clip

    root = Path(root)
    ids = []
    for i in range(int(num_clips)):
        clip = make_clip(i, seconds=seconds, seed=seed, language=language)
        rng = np.random.default_rng([seed, i, 0x4B54])  # independent of make_clip's stream
        T = clip.num_frames
        est = clip.poses + rng.normal(0, 0.02, clip.poses.shape).astype(np.float32)
        est[:, :3] += rng.normal(0, 0.05, (T, 3)).astype(np.float32)
        t = np.arange(T) / clip.fps
        cam = np.stack(
            [0.05 * np.sin(0.7 * t), 0.1 + 0.01 * t, 4.0 + 0.02 * rng.standard_normal(T)], 1
        )
        shape = rng.normal(0, 0.5, 10) + rng.normal(0, 0.05, (T, 10))
        expr = np.zeros((T, 10))
        expr[:, : min(10, clip.expressions.shape[1])] = clip.expressions[:, :10]
        folder = root / "json" / clip.clip_id
        folder.mkdir(parents=True, exist_ok=True)
        r = lambda a: [round(float(x), 6) for x in a]  # noqa: E731 - what estimators print
        for f in range(T):
            p = est[f]
            frame = {
                "smplx_root_pose": [r(p[0:3])],
                "smplx_body_pose": [r(p[3 + 3 * j : 6 + 3 * j]) for j in range(21)],
                "smplx_lhand_pose": r(p[75:120]),
                "smplx_rhand_pose": r(p[120:165]),
                "smplx_jaw_pose": r(p[66:69]),
                "smplx_shape": r(shape[f]),
                "smplx_expr": r(expr[f]),
                "cam_trans": r(cam[f]),
            }
            write_text_atomic(folder / f"{f:06d}.json", json.dumps(frame))
        text = " ".join(w for _, _, w in clip.words)
        write_text_atomic(root / "texts" / f"{clip.clip_id}.txt", text + "\n")
        (root / "wav").mkdir(parents=True, exist_ok=True)
        with atomic_path(root / "wav" / f"{clip.clip_id}.wav", ".wav") as tmp:
            sf.write(str(tmp), clip.audio, clip.sample_rate, subtype="FLOAT", format="WAV")
        ids.append(clip.clip_id)
    return ids


# --- the whole construction ------------------------------------------------------------------
# bump when build_dataset's output for the same inputs changes: stored clips are then rebuilt
BUILD_VERSION = 1
MANIFESTS = ".build"  # per-clip fingerprints and reports, beside the dataset


@dataclass
class ClipReport:
    """One clip's outcome: ``status`` is ``"built"``, ``"up to date"`` (skipped, outputs
    match its inputs) or ``"skipped"`` (see ``reason``); ``bad`` lists one line per bad
    frame file (file, key, expected vs found), ``gaps`` the dropped frame runs."""

    clip_id: str
    status: str
    frames_in: int = 0
    frames_kept: int = 0
    bad: list[str] | None = None
    gaps: list[tuple[int, int]] | None = None
    reason: str = ""


@dataclass
class BuildReport:
    """What :func:`build_dataset` did, clip by clip (in id order)."""

    out_root: Path
    clips: list[ClipReport]

    def ids(self, *statuses: str) -> list[str]:
        return [c.clip_id for c in self.clips if not statuses or c.status in statuses]

    @property
    def dataset_ids(self) -> list[str]:
        return self.ids("built", "up to date")

    def bad_frame_lines(self) -> list[str]:
        lines = []
        for c in self.clips:
            lines += [f"bad frame (dropped): {b}" for b in c.bad or []]
            lines += [f"{c.clip_id}: gap of {n} frame(s) from frame {s}" for s, n in c.gaps or []]
            if c.status == "skipped":
                lines.append(f"{c.clip_id}: clip skipped: {c.reason}")
        return lines

    def summary(self) -> str:
        n = {s: len(self.ids(s)) for s in ("built", "up to date", "skipped")}
        bad = sum(len(c.bad or []) for c in self.clips)
        return (
            f"ktubeum: {len(self.dataset_ids)} clips in {self.out_root} ({n['built']} built, "
            f"{n['up to date']} up to date, {n['skipped']} skipped; {bad} bad frames dropped)"
        )


def _clip_folders(json_root: Path) -> list[Path]:
    if not json_root.is_dir():
        raise DataError(json_root, "pose json folder missing")
    if any(json_root.glob("*.json")):  # a single clip's folder
        return [json_root]
    folders = sorted(p for p in json_root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if not folders:
        raise DataError(json_root, "no clip folders with per-frame json files")
    return folders


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_file(smplx_model) -> Path | None:
    if smplx_model is None:
        return None
    p = Path(smplx_model)
    for cand in (p, p / "smplx" / "SMPLX_NEUTRAL.npz", p / "SMPLX_NEUTRAL.npz"):
        if cand.is_file():
            return cand
    raise DataError(p, "SMPL-X model file missing", expected="SMPLX_NEUTRAL.npz or its folder")


def _fingerprint(files: list[Path], text: bytes | None, params: dict) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for f in files:
        h.update(f.name.encode() + b"\0")
        try:
            h.update(_sha(f.read_bytes()).encode())
        except OSError as e:
            h.update(f"unreadable {e}".encode())
    h.update(b"text\0" + (text if text is not None else b"<none>"))
    return h.hexdigest()


def _up_to_date(out_root: Path, cid: str, fingerprint: str) -> dict | None:
    """The clip's manifest when its fingerprint matches and every output it lists is intact."""
    m = out_root / MANIFESTS / f"{cid}.json"
    try:
        man = json.loads(m.read_text(encoding="utf-8"))
        if man.get("fingerprint") != fingerprint:
            return None
        for rel, digest in man["outputs"].items():
            if _sha((out_root / rel).read_bytes()) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or half-known outputs: rebuild the clip
    return man


def _remove_clip(out_root: Path, cid: str) -> None:
    # a clip that no longer builds must not leave its old outputs behind as if it did
    for rel in (
        f"{MANIFESTS}/{cid}.json",
        f"npz/{cid}.npz",
        f"new_joint_vecs/{cid}.npy",
        f"new_joints/{cid}.npy",
        f"texts/{cid}.txt",
    ):
        (out_root / rel).unlink(missing_ok=True)


def build_dataset(
    json_root: str | Path,
    out_root: str | Path,
    *,
    smplx_model: str | Path | None = None,
    texts: str | Path | None = None,
    fps: float = 30.0,
    cutoff_hz: float = 6.0,
    dst_fps: float = 20.0,
    language: str = "ko",
    min_seconds: float = 1.0,
    min_good_fraction: float = 0.5,
    split_seed: int = 0,
    progress=None,
) -> BuildReport:
    """The whole KTubeUM construction, resumable.

    ``json_root`` holds one folder of per-frame estimator json per clip (the folder name is
    the clip id), or is itself one such folder. ``texts`` holds ``<clip>.txt`` transcripts
    (one caption per line; default: a ``texts`` folder beside ``json_root`` when there is
    one). Per clip: :func:`scan_pose_jsons` (bad frames dropped and reported) ->
    :func:`estimates_to_npz` (``npz/``) -> :func:`npz_to_humanml3d_joints` (the user's
    SMPL-X model, or the approximate skeleton without one) -> ``new_joint_vecs/`` (263-d,
    :func:`humanml3d.joints_to_features`) and ``new_joints/`` (recovered from them, as
    :func:`humanml3d.write_dataset` writes) -> ``texts/`` (:func:`humanml3d.make_caption`:
    ``form/POS`` morphemes for Korean). Then, over all clips, ``Mean.npy``/``Std.npy`` and
    ``train/val/test/train_val/all.txt`` (:func:`humanml3d.make_splits`).

    Every file is written atomically and each clip ends with a manifest in ``.build/``
    (a fingerprint of its inputs and settings, hashes of its outputs), so a rerun after an
    interruption skips finished clips. A clip with fewer than ``min_seconds`` of good
    frames, or under ``min_good_fraction`` of its frames good, or (when transcripts are
    given) without one, is skipped and reported (its old outputs removed). Outputs of clips
    no longer in ``json_root`` are left alone but not listed in the splits or Mean/Std.
    ``progress(done, total, clip_id)`` is called after each clip."""
    from . import humanml3d

    json_root, out_root = Path(json_root), Path(out_root)
    folders = _clip_folders(json_root)
    model_file = _model_file(smplx_model)
    if texts is None and (json_root.parent / "texts").is_dir():
        texts = json_root.parent / "texts"
    if texts is not None and not Path(texts).is_dir():
        raise DataError(texts, "transcript folder missing")
    params = dict(
        version=BUILD_VERSION,
        fps=fps,
        cutoff_hz=cutoff_hz,
        dst_fps=dst_fps,
        language=language,
        model=None
        if model_file is None
        else [str(model_file.resolve()), model_file.stat().st_size, model_file.stat().st_mtime_ns],
    )
    reports = []
    for n, folder in enumerate(folders):
        cid = folder.name
        reports.append(
            _build_clip(
                folder,
                cid,
                out_root,
                texts,
                params,
                smplx_model,
                min_seconds,
                min_good_fraction,
                humanml3d,
            )
        )
        if progress is not None:
            progress(n + 1, len(folders), cid)
    report = BuildReport(out_root, reports)
    ids = sorted(report.dataset_ids)
    if not ids:
        raise DataError(json_root, "no clip could be built", found=report.bad_frame_lines()[-3:])
    feats = [np.load(out_root / "new_joint_vecs" / f"{c}.npy") for c in ids]
    mean, std = humanml3d.mean_std(feats)
    humanml3d._save_npy(out_root / "Mean.npy", mean)
    humanml3d._save_npy(out_root / "Std.npy", std)
    for name, split in humanml3d.make_splits(ids, seed=split_seed).items():
        humanml3d.write_split(out_root, name, split)
    return report


def _build_clip(
    folder, cid, out_root, texts, params, smplx_model, min_seconds, min_good, humanml3d
) -> ClipReport:
    files = sorted(folder.glob("*.json"), key=_frame_number)
    text = None
    if texts is not None:
        tp = Path(texts) / f"{cid}.txt"
        if not tp.is_file():
            _remove_clip(out_root, cid)
            return ClipReport(cid, "skipped", len(files), reason=f"no transcript {tp}")
        text = tp.read_bytes()
    fp = _fingerprint(files, text, params)
    man = _up_to_date(out_root, cid, fp)
    if man is not None:
        gaps = [tuple(g) for g in man["gaps"]]
        return ClipReport(cid, "up to date", man["frames_in"], man["frames_kept"], man["bad"], gaps)
    scan = scan_pose_jsons(files)
    bad = [str(e) for e in scan.bad]
    kept = len(scan.files)
    if kept < max(min_seconds * params["fps"], 2) or kept < min_good * scan.total:
        _remove_clip(out_root, cid)
        why = f"only {kept} of {scan.total} frames good"
        return ClipReport(cid, "skipped", scan.total, kept, bad, scan.gaps, why)
    if text is not None:
        try:
            lines = [ln.strip() for ln in text.decode("utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError as e:
            raise DataError(Path(texts) / f"{cid}.txt", f"not UTF-8 text: {e}") from None
        if not lines:
            _remove_clip(out_root, cid)
            return ClipReport(cid, "skipped", scan.total, kept, bad, scan.gaps, "empty transcript")
    z = estimates_to_npz(
        scan.arrays,
        out_root / "npz" / f"{cid}.npz",
        fps=params["fps"],
        cutoff_hz=params["cutoff_hz"],
    )
    joints = npz_to_humanml3d_joints(
        z["poses"], smplx_model, z["betas"], src_fps=params["fps"], dst_fps=params["dst_fps"]
    )
    feats = humanml3d.joints_to_features(joints)
    outputs = {
        f"new_joint_vecs/{cid}.npy": feats,
        # what write_dataset stores: the joints the features decode to (canonical frame)
        f"new_joints/{cid}.npy": humanml3d.recover_from_ric(feats.astype(np.float64)).astype(
            np.float32
        ),
    }
    for rel, arr in outputs.items():
        humanml3d._save_npy(out_root / rel, arr)
    written = [f"npz/{cid}.npz", *outputs]
    if text is not None:
        caps = [humanml3d.make_caption(ln, params["language"]) for ln in lines]
        humanml3d.write_texts(out_root, cid, caps)
        written.append(f"texts/{cid}.txt")
    manifest = dict(
        fingerprint=fp,
        frames_in=scan.total,
        frames_kept=kept,
        bad=bad,
        gaps=scan.gaps,
        outputs={rel: _sha((out_root / rel).read_bytes()) for rel in written},
    )
    # written last: its presence means every output above is complete
    write_text_atomic(out_root / MANIFESTS / f"{cid}.json", json.dumps(manifest, indent=1))
    return ClipReport(cid, "built", scan.total, kept, bad, scan.gaps)
