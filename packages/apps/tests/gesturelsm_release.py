"""A tiny GestureLSM release in the reference's file layout (generator checkpoint + yaml, three
part RVQ-VAEs, BEAT2 mean/std files, vocab.pkl), for the import tests. Loaded by path
(``importlib``), like the other test workers."""

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
import yaml

from gesture_apps.systems.gesturelsm.release import GestureLSM
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


def pickled_vocab(words: list[str], table: np.ndarray) -> bytes:
    """A vocab.pkl as the release writes it: a pickled ``dataloaders.build_vocab.Vocab``."""

    class Vocab:
        pass

    Vocab.__module__, Vocab.__qualname__ = "dataloaders.build_vocab", "Vocab"
    mod = types.ModuleType("dataloaders.build_vocab")
    mod.Vocab = Vocab
    saved = {k: sys.modules.get(k) for k in ("dataloaders", "dataloaders.build_vocab")}
    sys.modules["dataloaders"] = types.ModuleType("dataloaders")
    sys.modules["dataloaders.build_vocab"] = mod
    try:
        v = Vocab()
        v.index2word = dict(enumerate(words))
        v.word2index = {w: i for i, w in enumerate(words) if i > 3}
        v.n_words, v.word_embedding_weights = len(words), table
        return pickle.dumps(v)
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = m


def write_release(rel: Path) -> Path:
    """The released file layout at a tiny size: generator checkpoint + yaml, three RVQ-VAEs,
    BEAT2 mean/std files and vocab.pkl."""
    cfg = reference_yaml()
    (rel / "ckpt").mkdir(parents=True)
    (rel / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    den = cfg["model"]["denoiser"]["params"]
    model = GestureLSM(
        denoiser={k: den[k] for k in ("latent_dim", "ff_size", "num_layers", "num_heads")}
        | {"seq_len": den["seq_len"], "cond_proj_dim": den["cond_proj_dim"]},
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
    (rel / "vocab.pkl").write_bytes(pickled_vocab(WORDS, table))
    return rel


def import_args(rel, out) -> list[str]:
    return [
        "import", "gesturelsm", "--lsm", str(rel / "ckpt" / "lsm.bin"),
        "--config", str(rel / "cfg.yaml"), "--rvq-dir", str(rel / "ckpt"),
        "--mean-std", str(rel / "mean_std"), "--vocab", str(rel / "vocab.pkl"), "--out", str(out),
    ]  # fmt: skip
