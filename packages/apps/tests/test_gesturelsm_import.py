"""`gesture import gesturelsm`: a tiny release in the reference's file layout -> bundle ->
generation that equals the released sampler run window by window on the same noise."""

import pickle
import sys
import types

import numpy as np
import pytest
import torch
import yaml

from gesture_apps.cli import main
from gesture_apps.data.codec import decode_latents
from gesture_apps.systems.gesturelsm.export import load_lsm
from gesture_apps.systems.gesturelsm.pipeline import generate_motion
from gesture_apps.systems.gesturelsm.reference import GestureLSM
from gesture_data.datasets.windows import window_plan
from gesture_data.features.audio import onset_amplitude
from motion_tokenizers import RVQVAE

WORDS = ["<PAD>", "<SOS>", "<EOS>", "<UNK>", "hello", "world", "again"]


def reference_yaml() -> dict:
    """A small config in the released yaml's shape (``configs_new/shortcut_rvqvae_128.yaml``),
    interpolations and inference-irrelevant keys included."""
    return {
        "pre_frames": 4,
        "pose_length": 32,
        "vqvae_squeeze_scale": 4,
        "vqvae_latent_scale": 5,
        "model": {
            "guidance_scale": 2,
            "n_steps": 2,
            "use_exp": False,
            "denoiser": {
                "target": "models.denoiser.GestureDenoiser",
                "params": {
                    "input_dim": 128,
                    "latent_dim": 16,
                    "ff_size": 32,
                    "num_layers": 1,
                    "num_heads": 2,
                    "dropout": 0.1,
                    "activation": "gelu",
                    "n_seed": 8,
                    "seq_len": 8,
                    "flip_sin_to_cos": True,
                    "freq_shift": 0.0,
                    "cond_proj_dim": 16,
                    "use_exp": "${model.use_exp}",
                },
            },
            "modality_encoder": {
                "target": "models.layers.modality_encoder.ModalityEncoder",
                "params": {
                    "data_path": "./datasets/",
                    "t_fix_pre": False,
                    "audio_dim": 8,
                    "audio_in": 2,
                    "raw_audio": False,
                    "latent_dim": 16,
                    "audio_fps": 30,
                    "target_length": 32,
                    "spatial_temporal": True,
                    "use_exp": "${model.use_exp}",
                },
            },
        },
    }


def _seeded(shapes: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("inv_freq"):
            n = shapes[k][0]
            out[k] = 1.0 / (10000 ** (torch.arange(0, 2 * n, 2).float() / (2 * n)))
        else:
            v = torch.randn(shapes[k], generator=g) * 0.2
            out[k] = v.abs() + 0.5 if k.endswith("running_var") else v
    return out


def released_lsm_state(model: GestureLSM, seed: int = 0) -> dict:
    """Seeded weights under the released names, with the released extras our network does not
    use (each block's norm1, the positional table, the old timestep MLP, rotary buffers)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "first_seed"}
    D = model.denoiser.latent_dim
    for i in range(len(model.denoiser.mytimmblocks)):
        b = f"denoiser.mytimmblocks.{i}."
        shapes |= {b + "norm1.weight": (D,), b + "norm1.bias": (D,)}
        hd = D // model.denoiser.num_heads
        for pos in ("temporal_pos", "spatial_pos"):
            shapes[f"{b}spatial_temporal_attn.{pos}.inv_freq"] = (hd // 2,)
    shapes |= {
        "denoiser.sequence_pos_encoder.pe": (50, 1, D),
        "denoiser.embed_timestep.time_embed.0.weight": (D, D),
        "denoiser.embed_timestep.time_embed.0.bias": (D,),
        "denoiser.rel_pos.inv_freq": (D // 2,),
    }
    return _seeded(shapes, seed)


def released_rvq_state(input_dim: int, seed: int) -> dict:
    own = RVQVAE(input_dim, nb_code=16, code_dim=128, num_quantizers=2, width=16, depth=1)
    shapes = {k: tuple(v.shape) for k, v in own.state_dict().items() if "quantizer" not in k}
    shapes.pop("reference_codebooks", None)
    for i in range(2):
        shapes |= {
            f"quantizer.layers.{i}.codebook": (16, 128),
            f"quantizer.layers.{i}.embedding_proj.weight": (128, 128),
            f"quantizer.layers.{i}.embedding_proj.bias": (128,),
        }
    return _seeded(shapes, seed)


def pickled_vocab(words: list[str], table: np.ndarray, monkeypatch) -> bytes:
    mod = types.ModuleType("dataloaders.build_vocab")

    class Vocab:
        pass

    Vocab.__module__, Vocab.__qualname__ = "dataloaders.build_vocab", "Vocab"
    mod.Vocab = Vocab
    monkeypatch.setitem(sys.modules, "dataloaders", types.ModuleType("dataloaders"))
    monkeypatch.setitem(sys.modules, "dataloaders.build_vocab", mod)
    v = Vocab()
    v.index2word = dict(enumerate(words))
    v.word2index = {w: i for i, w in enumerate(words) if i > 3}
    v.n_words, v.word_embedding_weights = len(words), table
    return pickle.dumps(v)


@pytest.fixture
def release(tmp_path, monkeypatch):
    """The released file layout at a tiny size: generator checkpoint + yaml, three RVQ-VAEs,
    BEAT2 mean/std files and vocab.pkl."""
    cfg = reference_yaml()
    rel = tmp_path / "release"
    (rel / "ckpt").mkdir(parents=True)
    (rel / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    model = GestureLSM(
        denoiser={
            k: v
            for k, v in cfg["model"]["denoiser"]["params"].items()
            if k
            in (
                "input_dim",
                "latent_dim",
                "ff_size",
                "num_layers",
                "num_heads",
                "seq_len",
                "cond_proj_dim",
            )
        },
        modality_encoder=dict(
            vocab_size=len(WORDS), word_dim=12, audio_dim=8, latent_dim=16, target_length=32
        ),
        pose_length=32,
    )
    state = released_lsm_state(model)
    torch.save(
        {
            "model_state_dict": {"module." + k: v for k, v in state.items()},
            "optimizer_state_dict": {},
            "epoch": 3,
        },
        rel / "ckpt" / "lsm.bin",
    )
    for i, (part, dim) in enumerate((("upper", 78), ("hands", 180), ("lower", 57))):
        torch.save(
            {"net": released_rvq_state(dim, seed=10 + i)}, rel / "ckpt" / f"net_300000_{part}.pth"
        )
    rng = np.random.default_rng(0)
    (rel / "mean_std").mkdir()
    for name, n in (("330", 330), ("trans", 3)):
        np.save(rel / "mean_std" / f"beatx_2_{name}_mean.npy", rng.normal(size=n) * 0.1)
        np.save(rel / "mean_std" / f"beatx_2_{name}_std.npy", rng.uniform(0.5, 1.5, size=n))
    table = rng.normal(size=(len(WORDS), 12)).astype(np.float32)
    (rel / "vocab.pkl").write_bytes(pickled_vocab(WORDS, table, monkeypatch))
    return rel


def import_args(rel, out) -> list[str]:
    return [
        "import", "gesturelsm", "--lsm", str(rel / "ckpt" / "lsm.bin"),
        "--config", str(rel / "cfg.yaml"), "--rvq-dir", str(rel / "ckpt"),
        "--mean-std", str(rel / "mean_std"), "--vocab", str(rel / "vocab.pkl"), "--out", str(out),
    ]  # fmt: skip


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
    assert main(import_args(release, out)) == 0
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
    assert main(import_args(release, tmp_path / "b")) == 0
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

    args = import_args(release, out)
    fails([*args[:-2], "--out", str(release)], "holds the input")
    fails([a.replace("lsm.bin", "none.bin") for a in args], "file not found")
    (release / "ckpt" / "broken.bin").write_bytes(b"PK\x03\x04 truncated")
    fails([a.replace("lsm.bin", "broken.bin") for a in args], "not a loadable torch checkpoint")
    # a config that does not describe the checkpoint
    cfg = reference_yaml()
    cfg["model"]["denoiser"]["params"]["latent_dim"] = 32
    cfg["model"]["denoiser"]["params"]["cond_proj_dim"] = 32
    (release / "other.yaml").write_text(yaml.safe_dump(cfg))
    fails([a.replace("cfg.yaml", "other.yaml") for a in args], "has shape")
    del cfg["model"]["denoiser"]["params"]["seq_len"], cfg["pose_length"]
    (release / "other.yaml").write_text(yaml.safe_dump(cfg))
    fails([a.replace("cfg.yaml", "other.yaml") for a in args], "missing key 'pose_length'")
    # a vocabulary of another size than the checkpoint's word table
    table = np.zeros((len(WORDS) + 1, 12), np.float32)
    (release / "vocab2.pkl").write_bytes(pickled_vocab([*WORDS, "extra"], table, monkeypatch))
    fails([a.replace("vocab.pkl", "vocab2.pkl") for a in args], "8 words, but the checkpoint")
    # RVQ files of the wrong part size
    (release / "ckpt" / "net_300000_hands.pth").replace(release / "hands.pth")
    torch.save({"net": released_rvq_state(78, seed=3)}, release / "ckpt" / "net_300000_hands.pth")
    fails(args, "the hands part needs 180 channels")
