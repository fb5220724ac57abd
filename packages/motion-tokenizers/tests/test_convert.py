import pytest
import torch

from motion_tokenizers import RVQVAE, VQVAE, CheckpointError
from motion_tokenizers.convert import from_reference_checkpoint


def _reference_state(model, codebook_keys: dict[str, tuple[int, ...]], seed: int = 0, prefix=""):
    """A deterministic state dict with the reference's key names: our conv keys (identical to
    MoMask's) plus its codebook buffers, filled in sorted-key order from one seeded generator."""
    shapes = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("quantizer.")
    }
    shapes.update(codebook_keys)
    g = torch.Generator().manual_seed(seed)
    return {
        prefix + k: torch.randn(shapes[k], generator=g) * (0.3 if "codebook" in k else 0.15)
        for k in sorted(shapes)
    }


def test_momask_checkpoint_parity(tmp_path):
    """Outputs of MoMask's own RVQVAE (EricGuo5513/momask-codes @ 94a6636, models/vq/model.py,
    run on CPU with torch 2.15 in a scratch checkout, eval mode) on this exact state dict
    (input_width 12, nb_code 16, code_dim 8, width 16, depth 2, down_t 2, 3 quantizers; every
    tensor ``randn * 0.15``, codebooks ``* 0.3``, filled in sorted-key order from seed 0) and input
    ``randn(2, 16, 12)`` from seed 1. Recorded: the code indices, the sum and squared sum of the
    reconstruction, its first 3x3 values and the sum of the one-layer decode.

    Noise floor, measured by loading the same file in float64: the recorded float32 sums are
    up to 1.1e-7 relative off the exact ones, ours up to 9e-8 (1 or 2 threads; our polyphase
    upsampling orders the float32 sums differently); values off by <= 1.3e-7 absolute. Tolerance
    1e-6 relative / 1e-6 absolute, ~4x the two sides' floors together."""
    ours = RVQVAE(12, nb_code=16, code_dim=8, num_quantizers=3, width=16, depth=2)
    state = _reference_state(ours, {f"quantizer.layers.{i}.codebook": (16, 8) for i in range(3)})
    torch.save({"vq_model": state, "ep": 3, "total_it": 10}, tmp_path / "net.pth")
    model = from_reference_checkpoint(tmp_path / "net.pth")
    assert isinstance(model, RVQVAE) and model.num_quantizers == 3 and model.codebook_size == 16
    x = torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        idx = model.encode(x)
        recon = model(x).recon
        one = model.decode_indices(idx, num_layers=1)
    assert idx.tolist() == [
        [[2, 11, 0], [3, 4, 5], [1, 8, 0], [12, 4, 11]],
        [[2, 1, 0], [5, 8, 0], [14, 4, 11], [3, 1, 5]],
    ]
    assert recon.sum().item() == pytest.approx(-158.083984375, rel=1e-6)
    assert recon.pow(2).sum().item() == pytest.approx(169.84210205078125, rel=1e-6)
    expected = torch.tensor(
        [
            [-0.8303842544555664, -0.05250532925128937, -0.7943999767303467],
            [-1.1023712158203125, -0.2329406440258026, -1.333448052406311],
            [-0.9787112474441528, -0.20443196594715118, -1.775605320930481],
        ]
    )
    torch.testing.assert_close(recon[0, :3, :3], expected, rtol=0, atol=1e-6)
    assert one.sum().item() == pytest.approx(-139.65505981445312, rel=1e-6)


def test_gesturelsm_embedding_proj_is_folded_into_the_codebook(tmp_path):
    ours = RVQVAE(12, nb_code=16, code_dim=8, num_quantizers=2, width=16, depth=2)
    keys = {}
    for i in range(2):
        keys |= {
            f"quantizer.layers.{i}.codebook": (16, 8),
            f"quantizer.layers.{i}.embedding_proj.weight": (8, 8),
            f"quantizer.layers.{i}.embedding_proj.bias": (8,),
        }
    state = _reference_state(ours, keys, seed=3)
    torch.save({"net": {"module." + k: v for k, v in state.items()}}, tmp_path / "lsm.pth")
    model = from_reference_checkpoint(tmp_path / "lsm.pth")
    for i in range(2):
        cb = state[f"quantizer.layers.{i}.codebook"]
        w, b = (
            state[f"quantizer.layers.{i}.embedding_proj.weight"],
            state[f"quantizer.layers.{i}.embedding_proj.bias"],
        )
        torch.testing.assert_close(model.quantizer.q.codebooks[i], cb @ w.t() + b)
    # GestureLSM's own index decoding used the raw codebook; ours agrees with the forward pass
    x = torch.randn(1, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(
            model.decode_indices(model.encode(x)), model(x).recon, rtol=1e-5, atol=1e-5
        )


def test_t2m_gpt_checkpoint_builds_a_vqvae(tmp_path):
    ours = VQVAE(20, nb_code=32, code_dim=8, width=16, depth=2)
    state = _reference_state(ours, {"quantizer.codebook": (32, 8)}, prefix="vqvae.")
    torch.save({"net": state}, tmp_path / "vq.pth")
    model = from_reference_checkpoint(tmp_path / "vq.pth")
    assert isinstance(model, VQVAE) and model.codebook_size == 32 and model.input_dim == 20
    torch.testing.assert_close(model.quantizer.q.codebook, state["vqvae.quantizer.codebook"])
    assert model.encode(torch.randn(1, 8, 20)).shape == (1, 2, 1)


def test_reference_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        from_reference_checkpoint(tmp_path / "none.pth")
    (tmp_path / "bad.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="not a loadable torch checkpoint"):
        from_reference_checkpoint(tmp_path / "bad.pth")
    ours = RVQVAE(12, nb_code=16, code_dim=8, num_quantizers=2, width=16, depth=2)
    state = _reference_state(ours, {f"quantizer.layers.{i}.codebook": (16, 8) for i in range(2)})
    del state["decoder.model.0.bias"]
    torch.save({"net": state}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['decoder.model.0.bias'\]"):
        from_reference_checkpoint(tmp_path / "partial.pth")
