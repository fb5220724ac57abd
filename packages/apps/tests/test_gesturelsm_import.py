"""`gesture import gesturelsm`: a tiny release in the reference's file layout -> bundle ->
generation that equals the released sampler run window by window on the same noise."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gesture_apps.cli import main
from gesture_apps.data.codec import decode_latents
from gesture_apps.systems.gesturelsm.export import load_lsm
from gesture_apps.systems.gesturelsm.pipeline import generate_motion
from gesture_apps.systems.gesturelsm.release import GestureLSM
from gesture_data.datasets.windows import window_plan
from gesture_data.features.audio import onset_amplitude

_spec = importlib.util.spec_from_file_location(
    "gesturelsm_release", Path(__file__).with_name("gesturelsm_release.py")
)
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)
WORDS = R.WORDS


@pytest.fixture
def release(tmp_path):
    return R.write_release(tmp_path / "release")


def reference_word_index(words, num_frames: int) -> np.ndarray:
    """The release's loader rule, written out: the first interval with ``start <= t <= end``,
    its word's index (``<UNK>`` = 3 when unknown), ``<UNK>`` where no interval holds ``t``."""
    out = np.full(num_frames, 3, np.int64)
    for i in range(num_frames):
        for s, e, w in words:
            if s <= i / 30 <= e:
                out[i] = WORDS.index(w) if w in WORDS[4:] else 3
                break
    return out


def test_import_then_generate_equals_the_released_sampler(release, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(R.import_args(release, out)) == 0
    assert "import gesturelsm: bundle" in capsys.readouterr().out
    bundle = load_lsm(out)
    assert bundle.spec["layout"] == "reference" and len(bundle.vocab) == len(WORDS)

    rng = np.random.default_rng(1)
    seconds = 2.5
    audio = (rng.normal(size=int(seconds * 16000)) * 0.1).astype(np.float32)
    # boundaries on frame times (0.5 s = frame 15) and an unknown word
    words = [(0.2, 0.5, "hello"), (0.5, 0.9, "world"), (1.0, 1.5, "zebra"), (1.6, 2.2, "again")]
    motion = generate_motion(bundle, audio, words, steps=2, guidance=2.0, seed=4)

    # the release, window by window: its own GestureLSM.sample on the noise generation draws
    model = GestureLSM.from_reference_checkpoint(release / "ckpt" / "lsm.bin", release / "cfg.yaml")
    T = int(seconds * 30)
    plan = window_plan(T, 32, 4, 4)
    feats = onset_amplitude(audio, 16000, reference_indexing=True)
    spf = 16000 // 30
    feats = np.concatenate([feats, np.zeros((plan.latent_frames * 4 * spf, 2), np.float32)])
    word_idx = np.full(plan.latent_frames * 4, 3, np.int64)
    word_idx[:T] = reference_word_index(words, T)
    assert word_idx[15] == WORDS.index("hello")  # a frame on a boundary takes the earlier word
    noise = torch.randn(plan.windows, 8, 384, generator=torch.Generator().manual_seed(4))
    seed = bundle.generator.first_seed[None]
    pieces = []
    for i, st in enumerate(plan.starts(4)):
        a = torch.from_numpy(feats[st * spf : (st + 32) * spf])[None]
        w = torch.from_numpy(word_idx[st : st + 32])[None]
        z = model.sample(a, w, seed, noise[i : i + 1], steps=2, guidance=2.0)
        pieces.append(z if i == 0 else z[:, 4:])
        seed = z[:, -4:]
    with torch.no_grad():
        want = decode_latents(bundle.tokenizer, bundle.normalizer, torch.cat(pieces, 1), T)
    assert motion.poses.shape == (T, 165)
    print(
        "DIFF",
        np.abs(motion.poses - want.poses).max(),
        np.abs(motion.trans - want.trans).max(),
        np.abs(motion.poses).max(),
    )
    # same float32 operations in the same order (the bundle runs the release's time grid):
    # measured bit-identical at 1 thread; the bound, 1e-5 rad on poses up to ~3 rad, leaves
    # room for other thread counts (the network's float32 floor is ~1e-6 of its scale)
    np.testing.assert_allclose(motion.poses, want.poses, rtol=0, atol=1e-5)
    np.testing.assert_allclose(motion.trans, want.trans, rtol=0, atol=1e-5)


def test_first_seed_is_the_mean_pose_latents(release, tmp_path):
    assert main(R.import_args(release, tmp_path / "b")) == 0
    b = load_lsm(tmp_path / "b")
    still = {p: torch.zeros(1, 32, d) for p, d in (("upper", 78), ("hands", 180), ("lower", 57))}
    with torch.no_grad():
        z = b.tokenizer.encode_continuous(still)[0, :4]
    torch.testing.assert_close(b.generator.first_seed, z)
    assert b.generator.first_seed.abs().max() > 0


def test_import_refuses_bad_releases(release, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bundle"

    def fails(args, match):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err, err
        assert not out.exists()

    args = R.import_args(release, out)
    fails([*args[:-2], "--out", str(release)], "holds the input")
    fails([a.replace("lsm.bin", "none.bin") for a in args], "file not found")
    (release / "ckpt" / "broken.bin").write_bytes(b"PK\x03\x04 truncated")
    fails([a.replace("lsm.bin", "broken.bin") for a in args], "not a loadable torch checkpoint")
    # a config that does not describe the checkpoint
    cfg = R.reference_yaml()
    cfg["model"]["denoiser"]["params"]["latent_dim"] = 32
    cfg["model"]["denoiser"]["params"]["cond_proj_dim"] = 32
    (release / "other.yaml").write_text(yaml.safe_dump(cfg))
    fails([a.replace("cfg.yaml", "other.yaml") for a in args], "has shape")
    del cfg["model"]["denoiser"]["params"]["seq_len"], cfg["pose_length"]
    (release / "other.yaml").write_text(yaml.safe_dump(cfg))
    fails([a.replace("cfg.yaml", "other.yaml") for a in args], "missing key 'pose_length'")
    # a vocabulary of another size than the checkpoint's word table
    table = np.zeros((len(WORDS) + 1, 12), np.float32)
    (release / "vocab2.pkl").write_bytes(R.pickled_vocab([*WORDS, "extra"], table))
    fails([a.replace("vocab.pkl", "vocab2.pkl") for a in args], "8 words, but the checkpoint")
    # RVQ files of the wrong part size
    (release / "ckpt" / "net_300000_hands.pth").replace(release / "hands.pth")
    torch.save({"net": R.released_rvq_state(78, seed=3)}, release / "ckpt" / "net_300000_hands.pth")
    fails(args, "the hands part needs 180 channels")
