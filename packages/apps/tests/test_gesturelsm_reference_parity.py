"""The released GestureLSM network and RVQ-VAE against outputs recorded from the authors' code.

Recorded from ycyentropy/GestureLSM at commit fe124e0, run on CPU (torch 2.15, 1 thread, eval,
no_grad) from a scratch checkout outside this repository: ``GestureLSM(cfg)`` at the small config
``data/gesturelsm_fe124e0/lsm_small.yaml`` (latent 32, 2 layers, 4 heads, 8 latent frames, 2
seed frames), its weights overwritten from ``torch.Generator().manual_seed(0)`` in sorted-key
order (``lsm_small_keys.json``: shape and rule per released key; the rotary tables, positional
table and BatchNorm counters are kept as built and draw nothing), saved in the trainer's own
checkpoint layout ``{"model_state_dict": {"module." + key: ...}, ...}`` and loaded back here
through :meth:`GestureLSM.from_reference_checkpoint`. The RVQ-VAE (``models/vq/model.py``,
input 12, 16 codes x 8-d, width 16, depth 2, 3 layers) draws every tensor ``randn * 0.15``
(codebooks ``* 0.3``) in sorted-key order from seed 0 and is saved as ``{"net": ...}``.

Float32 noise floor, measured by the recording run in float64 (largest |f32 - f64| over the
output's largest |value|): denoiser 4e-7, guidance 8e-7, sampled latents 8.5e-7, condition
encoder 2e-6, RVQ 4e-7 (indices identical); 1 vs 2 threads moved the RVQ by 4.8e-7 and nothing
else. Our side runs attention through scaled_dot_product_attention and the cross keys once per
condition, so it adds a rounding of its own: measured against the recording, 0 on the condition
encoder, 1.6e-7 on the denoiser, 1.9e-7 / 2.1e-7 on 1- / 2-step samples (1 and 2 threads alike).
Tolerance: 1e-5 of each output's scale, about 10x both floors together.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_apps.systems.gesturelsm.release import GestureLSM
from motion_tokenizers import RVQVAE
from motion_tokenizers.convert import from_reference_checkpoint

DATA = Path(__file__).parent / "data" / "gesturelsm_fe124e0"


def close(ours: torch.Tensor, ref: np.ndarray, rel: float = 1e-5) -> None:
    ref = torch.from_numpy(np.asarray(ref))
    scale = ref.abs().max().item()
    torch.testing.assert_close(ours.float(), ref, rtol=0, atol=rel * scale)


def released_state() -> dict[str, torch.Tensor]:
    """The recorded checkpoint's weights, drawn again from the key list (bit-exact)."""
    spec = json.loads((DATA / "lsm_small_keys.json").read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for k in sorted(spec):
        shape, rule = spec[k]
        if rule == "kept":
            if k.endswith("inv_freq"):
                n = 2 * shape[0]
                state[k] = 1.0 / (10000 ** (torch.arange(0, n, 2).float() / n))
            else:  # the positional table (unused) and BatchNorm's batch counter
                state[k] = torch.zeros(shape, dtype=torch.long if "num_batches" in k else None)
            continue
        r = torch.randn(shape, generator=g) * 0.1
        state[k] = {"1+randn*s": 1 + r, "abs(randn*s)+0.5": r.abs() + 0.5}.get(rule, r)
    return state


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("lsm") / "lsm_small.bin"
    state = {"module." + k: v for k, v in released_state().items()}
    torch.save(
        {"epoch": 1, "iteration": 0, "model_state_dict": state, "optimizer_state_dict": {}},
        path,
    )
    return GestureLSM.from_reference_checkpoint(path, DATA / "lsm_small.yaml")


@pytest.fixture(scope="module")
def rec():
    return dict(np.load(DATA / "lsm_small_reference.npz"))


def as_ours(x: np.ndarray) -> torch.Tensor:
    """The reference's ``(B, P * C, 1, N)`` latents -> ours ``(B, N, P * C)``."""
    return torch.from_numpy(x).squeeze(2).transpose(1, 2)


def as_ref(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).unsqueeze(2)


def test_config_reads_the_released_yaml(model):
    cfg = model.config
    assert cfg["pre_frames"] == 2 and cfg["pose_length"] == 32 and cfg["n_steps"] == 2
    assert cfg["denoiser"]["latent_dim"] == 32 and cfg["denoiser"]["seq_len"] == 8
    assert (
        cfg["modality_encoder"]["vocab_size"] == 20 and cfg["modality_encoder"]["word_dim"] == 300
    )


@torch.no_grad()
def test_modality_encoder(model, rec):
    words = torch.from_numpy(rec["me_word"])
    # 33 encoder steps cut to 32, and 23 padded to 32 by repeating the last one
    close(model.condition(torch.from_numpy(rec["me_audio"]), words), rec["lsm_s1_at_feat"])
    close(model.condition(torch.from_numpy(rec["me_audio_short"]), words), rec["me_at_feat_short"])


@pytest.mark.parametrize(
    "t, d, key",
    [
        ("dn_t_per", "dn_d_per", "dn_out_tper_dper"),
        ("dn_t_per", None, "dn_out_tper_nod"),
        ("dn_t_b", "dn_d_b", "dn_out_tb_db"),  # one t and d for the batch, as sampling passes
        ("dn_t_b", None, "dn_out_tb_nod"),
    ],
)
@torch.no_grad()
def test_denoiser(model, rec, t, d, key):
    v = model.velocity(
        as_ours(rec["dn_x"]),
        torch.from_numpy(rec[t]),
        None if d is None else torch.from_numpy(rec[d]),
        torch.from_numpy(rec["dn_seed"]),
        torch.from_numpy(rec["dn_at_feat"]),
    )
    close(as_ref(v), rec[key])


@pytest.mark.parametrize(
    "g, key", [(2.0, "cfg_out_g2"), (3.5, "cfg_out_g3p5"), (1.0, "cfg_out_g1")]
)
@torch.no_grad()
def test_classifier_free_guidance(model, rec, g, key):
    v = model.guided_velocity(
        as_ours(rec["dn_x"]),
        torch.from_numpy(rec["dn_t_b"]),
        torch.from_numpy(rec["dn_d_b"]),
        torch.from_numpy(rec["dn_seed"]),
        torch.from_numpy(rec["dn_at_feat"]),
        g,
    )
    close(as_ref(v), rec[key])


@pytest.mark.parametrize("steps", [1, 2])
def test_sample_given_the_initial_noise(model, rec, steps):
    pre = f"lsm_s{steps}"
    # the recording drew its noise with torch.manual_seed(seed); randn(2, 384, 1, 8)
    torch.manual_seed(int(rec[f"{pre}_noise_seed"]))
    noise = torch.randn(2, 384, 1, 8)
    np.testing.assert_array_equal(noise.numpy(), rec[f"{pre}_init_noise"])
    z = model.sample(
        torch.from_numpy(rec["me_audio"]),
        torch.from_numpy(rec["me_word"]),
        torch.from_numpy(rec["dn_seed"]),
        as_ours(rec[f"{pre}_init_noise"]),
        steps=steps,
        guidance=2.0,
    )
    close(as_ref(z), rec[f"{pre}_latents"])


def test_unused_and_unknown_weights(tmp_path, model):
    state = {"module." + k: v for k, v in released_state().items()}
    state["module.denoiser.extra.weight"] = torch.zeros(3)
    torch.save({"model_state_dict": state}, tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"unexpected keys \['denoiser.extra.weight'\]"):
        GestureLSM.from_reference_checkpoint(tmp_path / "x.bin", DATA / "lsm_small.yaml")
    del state["module.denoiser.extra.weight"], state["module.denoiser.null_cond_embed"]
    torch.save({"model_state_dict": state}, tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"missing keys \['denoiser.null_cond_embed'\]"):
        GestureLSM.from_reference_checkpoint(tmp_path / "x.bin", DATA / "lsm_small.yaml")


# ----- RVQ-VAE ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rvq(tmp_path_factory):
    own = RVQVAE(12, nb_code=16, code_dim=8, num_quantizers=3, width=16, depth=2)
    shapes = {k: tuple(v.shape) for k, v in own.state_dict().items() if "quantizer" not in k}
    shapes.pop("reference_codebooks", None)
    for i in range(3):
        shapes |= {
            f"quantizer.layers.{i}.codebook": (16, 8),
            f"quantizer.layers.{i}.embedding_proj.weight": (8, 8),
            f"quantizer.layers.{i}.embedding_proj.bias": (8,),
        }
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(shapes[k], generator=g) * (0.3 if k.endswith("codebook") else 0.15)
        for k in sorted(shapes)
    }
    path = tmp_path_factory.mktemp("rvq") / "rvq_small.pth"
    torch.save({"net": state}, path)
    return from_reference_checkpoint(path), dict(np.load(DATA / "rvq_small_reference.npz"))


@torch.no_grad()
def test_rvq_matches_map2latent_encode_forward_latent2origin(rvq):
    tok, r = rvq
    x = torch.from_numpy(r["rvq_x"])
    torch.testing.assert_close(
        x, torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(1))
    )
    z = tok.encode_continuous(x)
    close(z, r["rvq_map2latent"])
    np.testing.assert_array_equal(tok.encode(x).numpy(), r["rvq_encode_idx"])
    close(tok(x).recon, r["rvq_fwd_rec"])
    close(tok.decode_latent(z), r["rvq_l2o_out"])  # latent2origin


@torch.no_grad()
def test_rvq_reference_index_decoding(rvq):
    """``forward_decoder`` gathers the raw codebooks (not ``embedding_proj(codebook)``): our
    default decodes consistently with ``forward``, ``reference=True`` as released."""
    tok, r = rvq
    idx = torch.from_numpy(r["rvq_encode_idx"])
    close(tok.decode_indices(idx, reference=True), r["rvq_fwd_dec_out"])
    close(tok.decode_indices(idx[..., :2], reference=True), r["rvq_fwd_dec_out_q2"])
    close(tok.decode_indices(idx), r["rvq_fwd_rec"])
    gap = (tok.decode_indices(idx) - tok.decode_indices(idx, reference=True)).abs().max()
    assert gap > 0.1  # the two semantics differ (0.63 here): the test can tell them apart
