"""Speed of speech-to-gesture generation on this machine (CPU); prints tables.

    uv run python benchmarks/generation.py [--threads N] [--repeats R] [--seconds S]

Random weights at the GestureLSM preset (``configs lsm_gesturelsm``: 3 parts x 128 latents,
denoiser 256 wide, 8 spatial-temporal + 3 cross blocks, 30.6 M parameters) and the 3-part
``MultiPartTokenizer.gesturelsm`` (upper / hands / lower RVQ-VAEs), built in memory: no
training, no downloads. The input is ``--seconds`` of the synthetic corpus' speech-like audio
with its word alignment, run through
:func:`gesture_apps.systems.gesturelsm.pipeline.generate_motion` (sliding 128-frame windows, 4
seed latents, no dropped tail).

Rows: 1, 2, 4 and 20 Euler steps with guidance 2 (conditional + unconditional branch in one
batch-2 forward), the one-step student (1 step, guidance 1: batch 1) and the same student under
bf16 autocast, whole (``generate_motion(bf16=True)``) or on the tokenizer decoders only, with
the largest joint-rotation angle to fp32. Columns: best wall time over ``--repeats`` runs,
real-time factor (audio seconds / wall seconds), peak RSS during the row, where the time goes
(audio features, condition encoder, denoiser, tokenizer decode, rest),
FLOPs counted with ``torch.utils.flop_counter`` and the FLOP lower bound, total FLOPs divided
by this machine's fp32 matmul rate measured in the same run (1024^3 matmul, best of many).
Guided rows with more than 2 steps get their FLOPs by linear extrapolation from the 1- and
2-step counts (the only work that grows with steps is one denoiser forward per step).

Last, one training step of the LSM recipe (shortcut loss: flow matching on 3/4 of the batch,
self-consistency on 1/4, Adam) at ``--train-batch`` windows (default 32; the recipe's own
batch is 128).

With ``--reference-checkout DIR`` (a checkout of ycyentropy/GestureLSM at fe124e0, outside
this repository) a last table runs GestureLSM's *released* model both ways in the same process:
the reference's own classes build the paper-size network (``configs_new/
shortcut_rvqvae_128.yaml``) and its three RVQ-VAEs with seeded random weights and save them in
the released file layout; ``gesture import gesturelsm``'s importer turns those files into a
bundle. Rows: the reference's test loop (``CustomTrainer._g_test``) on its own onset+amplitude
features as shipped (``calculate_onset_amplitude``: a strided 1024-sample window view, about
4 GB touched for 60 s), the same with the envelope as a sliding maximum (equal values, checked),
and our ``generate_motion`` on the bundle, all at 1 and 2 steps with guidance 2 and the same
initial noise; the last columns give our speed-up and the largest pose difference (6D and joint
angle) on the frames both produce. The reference needs ``omegaconf`` (``pip install --target
DEPS omegaconf``, passed as ``--reference-deps DEPS``); its training- and rendering-only
imports that this environment lacks (wandb, cv2, ...) are stubbed, and its ``.cuda()`` calls
return their input::

    uv run python benchmarks/generation.py --reference-checkout ../GestureLSM \
        --reference-deps ../gesturelsm-deps [--reference-only]

Timings are wall-clock: other processes on the machine slow them down (the load average is
printed before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
import timeit
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

PARTS = ("audio features", "condition encoder", "denoiser", "tokenizer decode")


def best_of(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    return min(timeit.repeat(fn, number=1, repeat=repeats))


def best_with_parts(fn, timers: Timers, repeats: int):
    """(output of the warm-up call, best wall time over ``repeats`` calls, ``timers``' split
    of that best call)."""
    out = fn()
    best, parts = float("inf"), {}
    for _ in range(repeats):
        timers.reset()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, parts = wall, dict(timers.total)
    return out, best, parts


def matmul_rate(repeats: int) -> float:
    """fp32 GFLOP/s of a 1024^3 matmul (best of many)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / best_of(lambda: a @ b, 10 * repeats) / 1e9


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timers:
    """Wall time accumulated per component by wrapping the functions the pipeline calls."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.depth = 0  # only the outermost timed call counts (forward calls cross_kv)

    def wrap(self, key: str, fn):
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[key] += time.perf_counter() - t0
                self.depth -= 1

        return timed

    def reset(self) -> None:
        self.total.clear()


def build(seconds: float):
    """(bundle, audio, words): GestureLSM-preset generator and tokenizer, random weights."""
    from gesture_apps.runtime import load_config
    from gesture_apps.systems.gesturelsm.config import LSMRecipeConfig
    from gesture_apps.systems.gesturelsm.export import LSMBundle
    from gesture_apps.systems.gesturelsm.model import LSMGenerator, build_spec
    from gesture_data import Normalizer
    from gesture_data.datasets.beat2 import Vocabulary
    from gesture_data.datasets.synthetic import make_corpus
    from motion_tokenizers import MultiPartTokenizer

    clip = make_corpus(1, seconds, 0)[0]
    vocab = Vocabulary.build([clip])
    cfg = load_config(LSMRecipeConfig, "gesturelsm/gesturelsm", ["tokenizer=unused"])
    tok = MultiPartTokenizer.gesturelsm(parts=tuple(cfg.model.parts)).eval()
    spec = build_spec(cfg, tok, vocab_size=len(vocab))
    gen = LSMGenerator(spec).eval()
    bundle = LSMBundle(gen, tok, Normalizer(), vocab, spec, Path("."))
    return bundle, np.asarray(clip.audio, np.float32), list(clip.words), cfg


def instrument(bundle, timers: Timers) -> None:
    """Route the pipeline's components through ``timers`` (instance attributes only)."""
    import gesture_apps.systems.gesturelsm.pipeline as pipeline

    # the name the pipeline calls (it imported the function, so patch its own global)
    pipeline.onset_amplitude = timers.wrap(PARTS[0], pipeline.onset_amplitude)
    gen = bundle.generator
    gen.encoder.forward = timers.wrap(PARTS[1], gen.encoder.forward)
    den = gen.denoiser
    for name in ("forward", "cross_kv"):
        setattr(den, name, timers.wrap(PARTS[2], getattr(den, name)))
    bundle.tokenizer.decode = timers.wrap(PARTS[3], bundle.tokenizer.decode)


@contextlib.contextmanager
def bf16_decoders(bundle):
    """bf16 autocast over the tokenizer decoders only (the codes are picked in fp32 before
    them, so only the decoded motion's rounding changes)."""
    decode = bundle.tokenizer.decode

    def decode_bf16(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return decode(*args, **kwargs)

    bundle.tokenizer.decode = decode_bf16
    try:
        yield
    finally:
        bundle.tokenizer.decode = decode


def rotation_diff(a, b) -> float:
    """Largest geodesic angle (degrees) between the joint rotations of two motions."""
    import roma

    ra, rb = (roma.rotvec_to_rotmat(torch.from_numpy(m.poses).double().view(-1, 3)) for m in (a, b))
    return float(roma.rotmat_geodesic_distance(ra, rb).max().rad2deg())


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def train_step_time(cfg, bundle, batch: int, repeats: int):
    """(seconds, GFLOP) of one LSM-recipe optimiser step at ``batch`` windows."""
    from dataclasses import asdict

    from flow_backbones import ShortcutLoss
    from gesture_apps.systems.gesturelsm.model import LSMGenerator
    from gesture_apps.systems.gesturelsm.train import LSMObjective

    gen = LSMGenerator(bundle.spec).train()
    obj = LSMObjective(gen, ShortcutLoss(**asdict(cfg.loss)), cfg.model.seed_drop)
    opt = torch.optim.Adam(obj.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    spec = bundle.spec
    L, n = spec["pose_length"], spec["pose_length"] // spec["factor"]
    la = round(L * spec["sample_rate"] / spec["fps"])
    D = gen.denoiser.num_parts * gen.denoiser.part_dim
    g = torch.Generator().manual_seed(0)
    data = {
        "latents": torch.randn(batch, n, D, generator=g),
        "audio": torch.rand(batch, la, 2, generator=g),
        "words": torch.randint(0, spec["vocab_size"], (batch, L), generator=g),
    }

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = obj(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(obj.parameters(), cfg.train.grad_clip)
        opt.step()

    flops = count_flops(step)  # also the warm-up
    return min(timeit.repeat(step, number=1, repeat=repeats)), flops / 1e9


# ----- the released GestureLSM against the reference code -----------------------------------

REFERENCE_STUBS = (
    "wandb", "cv2", "lmdb", "fasttext", "h5py", "pandas", "pyrender", "trimesh", "IPython",
)  # fmt: skip


def _stub_missing(names) -> list[str]:
    """Stand-ins for the reference's training- and rendering-only imports that this
    environment lacks (``wandb``, ``cv2``, ``lmdb``, ...): the code timed never calls them."""
    import importlib.util
    from unittest import mock

    stubbed = []
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            sys.modules[name] = mock.MagicMock(name=name)
            stubbed.append(name)
    return stubbed


@contextlib.contextmanager
def _no_cuda():
    """The reference calls ``.cuda()`` unconditionally; on this CPU run those calls (and only
    those) return their input."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved


class ReferenceRelease:
    """GestureLSM's release as its own code builds and runs it, from a checkout of
    ycyentropy/GestureLSM (fe124e0): the paper-size model of
    ``configs_new/shortcut_rvqvae_128.yaml`` and the trainer's three RVQ-VAEs with seeded random
    weights, saved in the released file layout under ``work`` (``ckpt/lsm.bin``,
    ``ckpt/net_300000_*.pth``, ``weights/vocab.pkl``, ``cfg.yaml``; the checkout's
    ``mean_std/``), and its test loop ``trainer/generative_trainer.py: CustomTrainer._g_test``."""

    PARTS = (("upper", 78), ("hands", 180), ("lower", 57))

    def __init__(self, checkout: Path, deps: list[Path], work: Path, words: list[str]):
        import pickle
        from types import SimpleNamespace

        sys.path[:0] = [str(checkout), *map(str, deps)]
        self.stubbed = _stub_missing(REFERENCE_STUBS)
        from dataloaders.build_vocab import Vocab
        from omegaconf import OmegaConf

        self.checkout, self.work = checkout, work
        cfg = OmegaConf.load(checkout / "configs_new" / "shortcut_rvqvae_128.yaml")
        cfg.model.modality_encoder.params.data_path = f"{work}/"  # reads weights/vocab.pkl
        for part, _ in self.PARTS:
            cfg[f"vqvae_{part}_path"] = str(work / "ckpt" / f"net_300000_{part}.pth")
        self.cfg = cfg

        # vocab.pkl as the release writes it: the reference's Vocab with a 300-d word table
        vocab = Vocab("benchmark")
        for w in dict.fromkeys(words):
            vocab.index_word(w)
        rng = np.random.default_rng(0)
        vocab.word_embedding_weights = rng.normal(size=(vocab.n_words, 300)).astype(np.float32)
        (work / "weights").mkdir(parents=True)
        (work / "weights" / "vocab.pkl").write_bytes(pickle.dumps(vocab))
        self.words = [vocab.index2word[i] for i in range(vocab.n_words)]

        torch.manual_seed(0)
        with _no_cuda():
            from models.LSM import GestureLSM
            from models.vq.model import RVQVAE
            from trainer.generative_trainer import CustomTrainer

            model = GestureLSM(cfg).eval()
            # the trainer's RVQ arguments (CustomTrainer._create_rvqvae_model)
            args = SimpleNamespace(
                num_quantizers=6, shared_codebook=False, quantize_dropout_prob=0.2, mu=0.99
            )
            (work / "ckpt").mkdir()
            g = torch.Generator().manual_seed(1)
            for part, dim in self.PARTS:
                net = RVQVAE(args, dim, 1024, 128, 128, 2, 2, 512, 3, 3, "relu", None)
                for layer in net.quantizer.layers:  # codebooks start at zero: give them codes
                    layer.codebook.copy_(torch.randn(layer.codebook.shape, generator=g))
                torch.save({"net": net.state_dict()}, cfg[f"vqvae_{part}_path"])
            state = {"module." + k: v for k, v in model.state_dict().items()}
            torch.save({"model_state_dict": state}, work / "ckpt" / "lsm.bin")
            (work / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))

            # CustomTrainer with what _g_test reads; its __init__ would also build datasets,
            # optimisers and wandb, none of which inference touches
            tr = object.__new__(CustomTrainer)
            tr.cfg, tr.args, tr.joints, tr.model = cfg, SimpleNamespace(), 55, model
            vq = tr._create_body_vq_models()  # loads the files just written
            tr.vq_model_upper, tr.vq_model_hands, tr.vq_model_lower = (
                vq[p].eval() for p, _ in self.PARTS
            )
        from dataloaders.data_tools import joints_list
        from utils.joints import hands_body_mask, lower_body_mask, upper_body_mask

        joints = joints_list["beat_smplx_joints"]
        for part in ("upper", "hands", "lower"):  # as CustomTrainer.__init__ builds them
            mask = np.zeros(len(joints) * 3)
            for name in joints_list[f"beat_smplx_{part}"]:
                mask[joints[name][1] - joints[name][0] : joints[name][1]] = 1
            setattr(tr, f"joint_mask_{part}", mask)
        ms = checkout / "mean_std"
        mean, std = np.load(ms / "beatx_2_330_mean.npy"), np.load(ms / "beatx_2_330_std.npy")
        masks = {"upper": upper_body_mask, "hands": hands_body_mask, "lower": lower_body_mask}
        for part, mask in masks.items():
            setattr(tr, f"mean_{part}", torch.from_numpy(mean[mask]))
            setattr(tr, f"std_{part}", torch.from_numpy(std[mask]))
        tr.trans_mean = torch.from_numpy(np.load(ms / "beatx_2_trans_mean.npy"))
        tr.trans_std = torch.from_numpy(np.load(ms / "beatx_2_trans_std.npy"))
        self.trainer, self.model = tr, model

    def files(self) -> dict[str, Path]:
        """The released files, as ``gesture import gesturelsm`` takes them."""
        w = self.work
        return {
            "lsm": w / "ckpt" / "lsm.bin",
            "config": w / "cfg.yaml",
            "rvq_dir": w / "ckpt",
            "mean_std": self.checkout / "mean_std",
            "vocab": w / "weights" / "vocab.pkl",
        }

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``(S, 2)`` onset + amplitude by the release's own function
        (``dataloaders/utils/audio_features.py``), handed ``audio`` (16 kHz) in place of the
        wav file it loads. Its envelope is the maximum over a strided ``(S, 1024)`` window
        view: about 4 GB of float32 touched for 60 s of audio."""
        from unittest import mock

        import librosa
        from dataloaders.utils.audio_features import calculate_onset_amplitude

        with mock.patch.object(librosa, "load", lambda *a, **k: (audio, 16000)):
            return calculate_onset_amplitude("in.wav", 16000, str(self.work / "onset.npy"))

    @staticmethod
    def features_fast(audio: np.ndarray) -> np.ndarray:
        """The same features with the envelope as a sliding maximum
        (:func:`gesture_data.features.audio.amplitude_envelope`) instead of the strided view:
        equal values (checked), no 4 GB pass; the onsets by the same librosa call."""
        import librosa

        from gesture_data.features.audio import amplitude_envelope

        env = amplitude_envelope(audio)
        onset = np.zeros(audio.size)
        onset[librosa.onset.onset_detect(y=audio, sr=16000, units="frames")] = 1.0
        return np.stack([env, onset], axis=1)

    @torch.no_grad()
    def generate(self, feats, words, first_seed, steps: int, guidance: float, seed: int):
        """``_g_test`` on one recording: ``feats`` (S, 2), per-frame word indices ``(T,)`` in
        the reference's vocabulary, the first window's seed latents ``(pre_frames, C)``.
        Returns its ``rec_pose`` (1, T', 330) in 6D on the frames its windows cover (it drops
        the tail)."""
        self.model.num_inference_steps, self.model.guidance_scale = steps, guidance
        T = words.shape[0]
        z = torch.zeros
        loaded = {
            "tar_pose": z(1, T, 165),
            "beta": z(1, T, 300),
            "facial_rep": z(1, T, 100),
            "trans": z(1, T, 3),
            "tar_id": z(1, T, 1, dtype=torch.long),
            "audio_onset": torch.from_numpy(np.asarray(feats, np.float32))[None],
            "word": torch.from_numpy(words)[None],
            "latent_in": first_seed[None].repeat(1, T // 4 // first_seed.shape[0] + 1, 1),
        }
        torch.manual_seed(seed)  # its initial noise: one torch.randn per window
        with _no_cuda():
            return self.trainer._g_test(loaded)["rec_pose"]

    def noise(self, windows: int, seed: int) -> torch.Tensor:
        """The initial noise ``generate(seed=)`` draws, in our ``(W, n, C)`` layout."""
        torch.manual_seed(seed)
        den = self.model.denoiser
        shape = (1, den.input_dim * den.joint_num, 1, den.seq_len)
        return torch.cat([torch.randn(shape).squeeze(2).transpose(1, 2) for _ in range(windows)])


def pose_diff(ref_6d: torch.Tensor, motion, rc, margin: int = 64) -> tuple[float, float]:
    """(largest 6D difference, largest joint-rotation angle in degrees) between the
    reference's ``rec_pose`` (1, T', 330) and our motion, on its frames but the last
    ``margin``: the reference drops the tail windows, so its decoder sees zero padding past
    frame T' where ours sees the next latents (the decoder's reach is about 60 frames)."""
    import roma

    T = ref_6d.shape[1] - margin
    ours = roma.rotvec_to_rotmat(torch.from_numpy(motion.poses[:T]).double().view(T, 55, 3))
    theirs = rc.rotation_6d_to_matrix(ref_6d[0, :T].double().view(T, 55, 6))
    ours_6d = rc.matrix_to_rotation_6d(ours).reshape(T, 330)
    angle = roma.rotmat_geodesic_distance(ours, theirs).max().rad2deg()
    return float((ours_6d - ref_6d[0, :T].double()).abs().max()), float(angle)


def reference_table(args, audio: np.ndarray, words) -> None:
    """The reference's test loop (as shipped, and with a sliding-maximum envelope) against
    our import of the same files, timed in this run, same initial noise."""
    import tempfile

    from gesture_apps.systems.gesturelsm.importer import import_gesturelsm, reorder_vocabulary
    from gesture_apps.systems.gesturelsm.pipeline import generate_motion, load_lsm
    from gesture_data.datasets.beat2 import frame_word_indices
    from gesture_data.datasets.windows import window_plan

    secs = audio.size / 16000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ref = ReferenceRelease(
            Path(args.reference_checkout),
            [Path(p) for p in args.reference_deps],
            work / "release",
            [w for _, _, w in words],
        )
        import_gesturelsm(**ref.files(), out=work / "bundle")
        bundle = load_lsm(work / "bundle")
        from utils import rotation_conversions as rc

        T = int(audio.size * 30 // 16000)
        vocab = bundle.vocab
        ours_idx = frame_word_indices(words, T, 30, vocab, closed=True, silence=vocab.UNK)
        ref_words = np.asarray(reorder_vocabulary(ref.words)[1])[ours_idx]
        first = bundle.generator.first_seed.detach().clone()
        plan = window_plan(T, bundle.spec["pose_length"], 4, bundle.generator.seed_frames)
        noise = ref.noise(plan.windows, seed=0)
        if not np.array_equal(ref.features(audio), ref.features_fast(audio)):
            raise SystemExit("the sliding-maximum envelope differs from the reference's")

        # where the time goes, on both sides: features, condition encoder, denoiser, decoders
        ours_t, ref_t = Timers(), Timers()
        instrument(bundle, ours_t)
        features = ref_t.wrap(PARTS[0], ref.features)
        features_fast = ref_t.wrap(PARTS[0], ref.features_fast)
        model = ref.model
        model.modality_encoder.forward = ref_t.wrap(PARTS[1], model.modality_encoder.forward)
        model.denoiser.forward = ref_t.wrap(PARTS[2], model.denoiser.forward)
        for part in ("upper", "hands", "lower"):
            vq = getattr(ref.trainer, f"vq_model_{part}")
            vq.latent2origin = ref_t.wrap(PARTS[3], vq.latent2origin)

        rows = []
        for steps in (1, 2):
            methods = {
                "reference as shipped": (
                    ref_t,
                    lambda s=steps: ref.generate(features(audio), ref_words, first, s, 2.0, 0),
                ),
                "reference, sliding-max envelope": (
                    ref_t,
                    lambda s=steps: ref.generate(features_fast(audio), ref_words, first, s, 2.0, 0),
                ),
                "ours, imported": (
                    ours_t,
                    lambda s=steps: generate_motion(
                        bundle, audio, words, steps=s, guidance=2.0, noise=noise
                    ),
                ),
            }
            times, outs = {}, {}
            for name, (timers, fn) in methods.items():
                reset_peak_rss()
                outs[name], best, parts = best_with_parts(fn, timers, args.repeats)
                times[name] = best
                rest = best - sum(parts.get(k, 0.0) for k in PARTS)
                rows.append(
                    [
                        name,
                        steps,
                        f"{best:.2f}",
                        f"{secs / best:.1f}x",
                        f"{peak_rss_mib():.0f}",
                        *(f"{parts.get(k, 0.0):.2f}" for k in PARTS),
                        f"{rest:.2f}",
                        "",
                        "",
                    ]
                )
            d6, deg = pose_diff(outs["reference as shipped"], outs["ours, imported"], rc)
            ours = times["ours, imported"]
            rows[-1][-2] = " / ".join(f"{times[k] / ours:.2f}x" for k in list(methods)[:2])
            rows[-1][-1] = f"{d6:.1e} / {deg:.1e} deg"
    print(
        f"\nreleased GestureLSM at paper size (random weights), {secs:.0f} s of audio, guidance 2, "
        f"same initial noise; reference: {args.reference_checkout} "
        f"(stubbed imports: {', '.join(ref.stubbed) or 'none'})"
    )
    head = ("implementation", "steps", "s (best)", "RTF", "peak MiB", "audio s", "encoder s",
            "denoiser s", "decode s", "rest s", "speed-up vs shipped / sliding-max",
            "max diff 6D / angle")  # fmt: skip
    print(table(head, rows))


def table(head, rows) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def main() -> None:
    from gesture_apps.systems.gesturelsm.pipeline import generate_motion

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60.0, help="audio length")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--no-train", action="store_true", help="skip the training-step row")
    p.add_argument(
        "--reference-checkout",
        metavar="DIR",
        help="a checkout of ycyentropy/GestureLSM (fe124e0): adds the released-model table",
    )
    p.add_argument(
        "--reference-deps",
        metavar="DIR",
        action="append",
        default=[],
        help="a folder of the reference's extra packages (omegaconf), e.g. from "
        "`pip install --target DIR omegaconf`; repeatable",
    )
    p.add_argument("--reference-only", action="store_true", help="only the released-model table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load0 = os.getloadavg()

    bundle, audio, words, cfg = build(args.seconds)
    if args.reference_checkout and args.reference_only:
        reference_table(args, audio, words)
        print(f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        return
    secs = audio.size / 16000
    rate = matmul_rate(args.repeats)
    timers = Timers()
    instrument(bundle, timers)

    def run(steps, guidance, bf16=False):
        return generate_motion(bundle, audio, words, steps=steps, guidance=guidance, bf16=bf16)

    # FLOPs: counted for the cheap settings, extrapolated linearly in steps for the others
    counted = {(s, g): count_flops(lambda s=s, g=g: run(s, g)) for s, g in [(1, 2.0), (2, 2.0)]}
    counted[(1, 1.0)] = count_flops(lambda: run(1, 1.0))
    per_step = counted[(2, 2.0)] - counted[(1, 2.0)]

    settings = [(1, 2.0), (2, 2.0), (4, 2.0), (20, 2.0), (1, 1.0)]
    rows, ref = [], {}
    bf16_rows = [(1, 1.0, "bf16"), (1, 1.0, "bf16 decoders")]
    for steps, guidance, bf16 in [*((s, g, None) for s, g in settings), *bf16_rows]:
        key = (steps, guidance)
        name = f"{steps} step{'s' if steps > 1 else ''}, guidance {guidance:g}"
        if guidance == 1.0:
            name += " (student)"
        if bf16:
            name += f" {bf16}"
        whole = bf16 == "bf16"  # generate_motion(bf16=True); else the decoders only
        ctx = bf16_decoders(bundle) if bf16 and not whole else contextlib.nullcontext()
        reps = 1 if steps > 4 else args.repeats
        reset_peak_rss()
        with ctx:
            out, best, parts = best_with_parts(
                lambda s=steps, g=guidance, w=whole: run(s, g, w), timers, reps
            )
        rss = peak_rss_mib()
        if bf16:
            # compared as rotations: axis-angle vectors of one rotation differ by 2 pi near pi
            name += f" (joint rotation diff max {rotation_diff(out, ref[key]):.2f} deg)"
        else:
            ref[key] = out
        flops = counted.get(key, counted[(1, guidance)] + (steps - 1) * per_step)
        rest = best - sum(parts.get(k, 0.0) for k in PARTS)
        rows.append(
            (
                name,
                f"{best:.2f}",
                f"{secs / best:.1f}x",
                f"{rss:.0f}",
                *(f"{parts.get(k, 0.0):.3f}" for k in PARTS),
                f"{rest:.3f}",
                f"{flops / 1e9:.1f}",
                f"{flops / 1e9 / rate:.2f}",
            )
        )

    print(
        f"threads={args.threads}, torch {torch.__version__}, {secs:.0f} s of audio, "
        f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"fp32 matmul rate (1024^3): {rate:.1f} GFLOP/s")
    head = (
        "setting",
        "s (best)",
        "RTF",
        "peak MiB",
        "audio s",
        "encoder s",
        "denoiser s",
        "decode s",
        "rest s",
        "GFLOP",
        "bound s",
    )
    print(table(head, rows))
    if not args.no_train:
        t, gf = train_step_time(cfg, bundle, args.train_batch, max(1, args.repeats - 2))
        print(
            table(
                ("training step (LSM recipe, Adam)", "batch", "s (best)", "GFLOP", "bound s"),
                [
                    (
                        "shortcut loss fwd+bwd+step",
                        args.train_batch,
                        f"{t:.2f}",
                        f"{gf:.0f}",
                        f"{gf / rate:.2f}",
                    )
                ],
            )
        )

    if args.reference_checkout:
        reference_table(args, audio, words)


if __name__ == "__main__":
    main()
