import math

import pytest
import torch

from motion_tokenizers import Quantizer, codebook_perplexity


def test_quantize_dropout_rate_per_batch():
    """MoMask/GestureLSM quantize dropout: with p = 0.2 per batch, keep layers 0..k, k ~ U{0..5}.

    A batch is truncated when the coin says drop *and* k < Q-1, i.e. with probability
    0.2 * 5/6 = 1/6; the library alone would drop on every call (5/6). With 1200 seeded calls the
    binomial standard deviation is 0.011, so the test allows 4 sigma around 1/6.
    """
    torch.manual_seed(1234)
    q = Quantizer("rvq", 8, codebook_size=16, num_quantizers=6, quantize_dropout_prob=0.2)
    q.train()
    z = torch.randn(2, 4, 8)
    n, truncated, kept = 500, 0, []
    for _ in range(n):
        idx = q(z).indices
        active = int((idx[0, 0] >= 0).sum())
        # dropped layers are a suffix of -1 entries, identical across the whole batch
        assert torch.equal((idx >= 0).all(0).all(0), (idx >= 0).any(0).any(0))
        assert (idx[..., :active] >= 0).all() and (idx[..., active:] == -1).all()
        if active < 6:
            truncated += 1
            kept.append(active)
    rate = truncated / n
    sigma = math.sqrt((1 / 6) * (5 / 6) / n)
    assert abs(rate - 1 / 6) < 4 * sigma, rate
    # kept layers 1..5 are equally likely among truncated batches
    counts = torch.bincount(torch.tensor(kept), minlength=6)[1:]
    assert counts.min() > 0.5 * counts.float().mean()
    # eval never drops
    q.eval()
    assert (q(z).indices >= 0).all()


def test_quantize_dropout_off_and_always():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8)
    never = Quantizer("rvq", 8, codebook_size=16, num_quantizers=4, quantize_dropout_prob=0.0)
    assert all((never(z).indices >= 0).all() for _ in range(20))
    always = Quantizer("rvq", 8, codebook_size=16, num_quantizers=4, quantize_dropout_prob=1.0)
    truncated = sum(int((always(z).indices == -1).any()) for _ in range(200))
    assert abs(truncated / 200 - 3 / 4) < 0.13


def test_dead_codes_are_reseeded_from_the_batch():
    torch.manual_seed(0)
    q = Quantizer("vq", 4, codebook_size=32, dead_code_threshold=1.0, kmeans_init=True)
    data = torch.randn(4, 64, 4)
    q(data)  # k-means init on the first batch
    codebook = q.q._codebook
    with torch.no_grad():
        codebook.embed[0, :8] = 1000.0  # far from every input: never chosen
        codebook.embed_avg[0, :8] = 1000.0
        codebook.cluster_size[0, :8] = 0.0
    for _ in range(3):
        q(data)
    moved = codebook.embed[0, :8]
    # re-seeded codes are batch vectors again, inside the data's range
    assert moved.abs().max() < data.abs().max() + 1e-4
    # and their usage counts restart from the reset value instead of staying at zero
    assert (codebook.cluster_size[0, :8] > 0.5).all()


def test_kmeans_init_and_ema_decay_are_configured():
    q = Quantizer("rvq", 8, codebook_size=16, num_quantizers=2, decay=0.99)
    layer = q.q.layers[0]._codebook
    assert layer.decay == 0.99 and not bool(layer.initted)  # k-means on the first batch
    q(torch.randn(2, 16, 8))
    assert bool(layer.initted)
    # plain straight-through by default; rotation trick only when asked for
    assert q.q.layers[0].rotation_trick is False
    assert Quantizer("vq", 8, codebook_size=16, rotation_trick=True).q.rotation_trick is True


def test_straight_through_gradient_reaches_the_encoder_output():
    torch.manual_seed(0)
    q = Quantizer("rvq", 8, codebook_size=16, num_quantizers=3, quantize_dropout_prob=0.0)
    z = torch.randn(2, 6, 8, requires_grad=True)
    out = q(z)
    out.quantized.sum().backward()
    # straight-through per layer on a residual whose gradient is the identity (the previous
    # layers' codes are detached, as in MoMask), so d quantized / d z = Q * I
    torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))


def test_codebook_perplexity():
    assert codebook_perplexity(torch.arange(16), 16).item() == pytest.approx(16.0)
    assert codebook_perplexity(torch.zeros(10, dtype=torch.long), 16).item() == pytest.approx(1.0)
    two = torch.tensor([0, 0, 1, 1, -1, -1])  # dropped entries ignored
    assert codebook_perplexity(two, 16).item() == pytest.approx(2.0)


@pytest.mark.parametrize("kind", ["fsq", "rfsq"])
def test_fsq_codebook_size_from_levels(kind):
    q = Quantizer(kind, 12, levels=[8, 5, 5, 5], num_quantizers=2)
    assert q.codebook_size == 1000
    z = torch.randn(2, 8, 12)
    q.eval()
    out = q(z)
    torch.testing.assert_close(
        q.indices_to_latent(out.indices), out.quantized, rtol=1e-5, atol=1e-5
    )


def test_unknown_kind_and_bad_lfq_size():
    with pytest.raises(ValueError, match="quantizer kind"):
        Quantizer("gumbel", 8)
    with pytest.raises(ValueError, match="power of two"):
        Quantizer("lfq", 8, codebook_size=1000)
    with pytest.raises(ValueError, match="expected \\(B, N, 8\\)"):
        Quantizer("vq", 8, codebook_size=4)(torch.zeros(2, 3, 7))


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_eval_fast_path_matches_the_library(kind):
    """The eval nearest-code search gives the library's own eval codes and outputs."""
    torch.manual_seed(0)
    q = Quantizer(kind, 16, codebook_size=64, num_quantizers=4)
    q(torch.randn(4, 32, 16))  # k-means init + EMA update
    q.eval()
    z = torch.randn(3, 20, 16)
    fast = q(z)
    if kind == "vq":
        lib_q, lib_idx, _ = q.q(z)
        lib_idx = lib_idx.unsqueeze(-1)
    else:
        lib_q, lib_idx, _ = q.q(z)
    assert torch.equal(fast.indices, lib_idx)
    torch.testing.assert_close(fast.quantized, lib_q, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.quantized, q.indices_to_latent(fast.indices))
    assert torch.equal(q.nearest_indices(z), fast.indices)  # the lean search for decoding
    assert fast.loss > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q(z.bfloat16()).indices, q(z.bfloat16().float()).indices)


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_eval_search_follows_codebook_updates(kind):
    """The eval search keeps its stacked codebooks between calls. After EMA training steps
    (which write the codebooks through ``.data``, unseen by version counters) and after
    ``load_state_dict`` its codes equal a search on freshly stacked codebooks."""
    torch.manual_seed(0)
    q = Quantizer(kind, 16, codebook_size=64, num_quantizers=4)
    z = torch.randn(3, 20, 16)

    def fresh_codes():
        cached = q.__dict__.pop("_tables", None)
        out = q(z).indices
        if cached is not None:
            q.__dict__["_tables"] = cached
        return out

    q(torch.randn(4, 32, 16))  # k-means init
    seen = []
    for _ in range(3):
        q.eval()
        seen.append(q(z).indices)
        assert torch.equal(seen[-1], fresh_codes())
        q.train()
        q(3 * torch.randn(4, 32, 16) + 1)  # EMA update moves every used code
    q.eval()
    assert torch.equal(q(z).indices, fresh_codes())
    assert not torch.equal(q(z).indices, seen[0])  # the updates changed the codes
    other = Quantizer(kind, 16, codebook_size=64, num_quantizers=4)
    other(torch.randn(4, 32, 16))
    q.load_state_dict(other.state_dict())
    other.eval()
    assert torch.equal(q(z).indices, other(z).indices)


@pytest.mark.parametrize("kind", ["vq", "rvq"])
def test_indices_to_latent_equals_the_library(kind):
    """The gather from the cached codebooks is the library's ``get_output_from_indices``
    exactly: all layers, the first few, and -1 (absent) entries."""
    torch.manual_seed(0)
    q = Quantizer(kind, 16, codebook_size=64, num_quantizers=4)
    q(torch.randn(4, 32, 16))
    q.eval()
    Q = 1 if kind == "vq" else 4
    idx = torch.randint(0, 64, (3, 20, Q))
    cases = [(idx, None)]
    if kind == "rvq":
        holes = idx.clone()
        holes[0, :5, 2:] = -1
        cases += [(idx, 2), (holes, None)]
    for i, n in cases:
        lib_i = i[..., :n] if n else i
        if kind == "vq":
            want = q.q.get_output_from_indices(lib_i[..., 0])
        else:
            pad = torch.nn.functional.pad(lib_i, (0, 4 - lib_i.shape[-1]), value=-1)
            want = q.q.get_output_from_indices(pad)
        assert torch.equal(q.indices_to_latent(i, n), want)


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("vq", {"codebook_size": 64}),
        ("rvq", {"codebook_size": 64, "num_quantizers": 4}),
        ("fsq", {"levels": [8, 5, 5, 5]}),
        ("rfsq", {"levels": [8, 5, 5, 5], "num_quantizers": 2}),
        ("lfq", {"codebook_size": 256}),
    ],
)
def test_nearest_indices_are_the_eval_codes_in_any_mode(kind, kw):
    """``nearest_indices`` (what a decode re-quantises with) gives the eval forward's codes
    for every kind, from train mode too, and leaves the mode as it found it."""
    torch.manual_seed(0)
    q = Quantizer(kind, 12 if "levels" in kw else 8, **kw)
    z = torch.randn(3, 10, q.dim)
    q(torch.randn(4, 16, q.dim))  # codebook init where there is one
    q.eval()
    want = q(z).indices
    q.train()
    assert torch.equal(q.nearest_indices(z), want)
    assert q.training
    with pytest.raises(ValueError, match="expected"):
        q.nearest_indices(torch.randn(3, 10, q.dim + 1))
