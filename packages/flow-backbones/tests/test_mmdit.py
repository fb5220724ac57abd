"""N-stream MMDiT: masks, absent streams, per-stream time, persistence, errors, presets."""

import pytest
import torch

import flow_backbones as fb
from flow_backbones import MMDiT, StreamSpec


def randomize(model, seed=0, scale=0.2):
    """Replace the zero-initialised modulations and heads so that outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def three_stream(**kw):
    streams = {"gesture": StreamSpec(6), "audio": StreamSpec(4), "text": StreamSpec(5)}
    return randomize(MMDiT(streams, dim=32, depth=2, num_heads=4, **kw).eval())


def inputs(B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = {
        "gesture": torch.randn(B, 7, 6, generator=g),
        "audio": torch.randn(B, 9, 4, generator=g),
        "text": torch.randn(B, 5, 5, generator=g),
    }
    t = {n: torch.rand(B, generator=g) for n in x}
    return x, t


def test_output_shapes_and_zero_init():
    m = MMDiT.tiny()
    x = {"gesture": torch.randn(2, 16, 8), "audio": torch.randn(2, 24, 4)}
    out = m(x, {"gesture": torch.rand(2), "audio": 1.0})
    assert out["gesture"].shape == (2, 16, 8) and out["audio"].shape == (2, 24, 4)
    # zero output heads: the untrained model predicts v = 0
    assert out["gesture"].abs().max() == 0


def test_padded_keys_change_no_other_token():
    m = three_stream()
    x, t = inputs()
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False  # last 3 audio tokens of row 0 are padding
    out = m(x, t, {"audio": mask})
    x2 = {k: v.clone() for k, v in x.items()}
    x2["audio"][0, 6:] = 100 * torch.randn(3, 4)
    out2 = m(x2, t, {"audio": mask})
    for n in out:
        keep = slice(None) if n != "audio" else slice(0, 6)
        torch.testing.assert_close(out[n][0, keep], out2[n][0, keep], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[n][1], out2[n][1])
    # without the mask the same change does reach the gesture stream
    out3 = m(x2, t)
    assert (out3["gesture"][0] - out["gesture"][0]).abs().max() > 1e-3


def test_absent_streams_are_skipped_not_zero_filled():
    m = three_stream(per_stream_time=True)
    x, t = inputs()
    sub = {"gesture": x["gesture"], "audio": x["audio"]}
    out = m(sub, t)
    assert set(out) == {"gesture", "audio"}
    # skipping equals hiding every text token (per-stream time: text's t has no other effect)
    hidden = m(x, t, {"text": torch.zeros(2, 5, dtype=torch.bool)})
    torch.testing.assert_close(out["gesture"], hidden["gesture"], atol=1e-5, rtol=1e-5)
    # and differs from feeding zeros for text
    zeros = m({**sub, "text": torch.zeros(2, 5, 5)}, t)
    assert (zeros["gesture"] - out["gesture"]).abs().max() > 1e-3
    # an absent stream's weights get no gradient
    m.train()
    m(sub, t)["gesture"].sum().backward()
    assert m.in_proj["text"].weight.grad is None
    assert m.in_proj["audio"].weight.grad.abs().sum() > 0


def test_per_stream_timesteps_reach_their_own_stream():
    m = three_stream(per_stream_time=True)
    x, t = inputs()
    seen = {}

    def hook(name):
        def f(module, args, kwargs):
            seen[name] = kwargs["emb"].clone()

        return f

    for n in x:
        m.blocks[0].branches[n].norm1.register_forward_pre_hook(hook(n), with_kwargs=True)
    m(x, t)
    for n in x:
        torch.testing.assert_close(seen[n], m.time_embed[n](t[n]))
    # changing the text time changes only the text stream's modulation
    before = dict(seen)
    m(x, {**t, "text": 1 - t["text"]})
    torch.testing.assert_close(seen["gesture"], before["gesture"])
    assert (seen["text"] - before["text"]).abs().max() > 1e-3

    shared = three_stream(per_stream_time=False)
    for n in x:
        shared.blocks[0].branches[n].norm1.register_forward_pre_hook(hook(n), with_kwargs=True)
    shared(x, t)
    total = sum(shared.time_embed[n](t[n]) for n in x)
    for n in x:
        torch.testing.assert_close(seen[n], total)


def test_pooled_condition_and_positions():
    m = randomize(MMDiT.tiny(pooled_dim=3).eval())
    x = {"gesture": torch.randn(1, 4, 8)}
    t = {"gesture": torch.tensor([0.3])}
    a = m(x, t, pooled=torch.zeros(1, 3))["gesture"]
    b = m(x, t, pooled=torch.ones(1, 3))["gesture"]
    assert (a - b).abs().max() > 1e-3
    c = m(x, t, pooled=torch.zeros(1, 3), positions={"gesture": torch.arange(4) * 2.0})["gesture"]
    assert (a - c).abs().max() > 1e-4
    with pytest.raises(fb.FlowInputError, match="pooled"):
        m(x, t)


def test_context_only_last_stream(one_thread):
    streams = {
        "gesture": StreamSpec(6),
        "text": StreamSpec(5, generate=False, context_only_last=True),
    }
    m = randomize(MMDiT(streams, dim=32, depth=2, num_heads=4).eval())
    assert not hasattr(m.blocks[-1].branches["text"], "ff")
    assert hasattr(m.blocks[0].branches["text"], "ff")
    x, t = inputs()
    out = m({"gesture": x["gesture"], "text": x["text"]}, {"gesture": t["gesture"], "text": 1.0})
    assert set(out) == {"gesture"}
    # a generated context-only stream (OmniFlow's text): its head reads the states from before
    # the last block, so the last block's weights change the other streams but not it
    streams["text"] = StreamSpec(5, context_only_last=True)
    m = randomize(MMDiT(streams, dim=32, depth=2, num_heads=4).eval())
    xs = {"gesture": x["gesture"], "text": x["text"]}
    ts = {"gesture": t["gesture"], "text": t["text"]}
    before = m(xs, ts)
    with torch.no_grad():
        for p in m.blocks[-1].parameters():
            p.add_(0.5)
    after = m(xs, ts)
    assert torch.equal(before["text"], after["text"])
    assert (before["gesture"] - after["gesture"]).abs().max() > 1e-3


def test_save_load_bit_identical(tmp_path):
    m = three_stream(per_stream_time=True, pooled_dim=None)
    m.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.json").is_file()
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder removed
    m2 = MMDiT.from_pretrained(tmp_path / "ckpt").eval()
    assert m2.specs == m.specs and m2.per_stream_time
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x, t = inputs()
    for n, v in m(x, t).items():
        assert torch.equal(v, m2(x, t)[n])
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(fb.CheckpointError, match=r"model\.safetensors"):
        MMDiT.from_pretrained(tmp_path / "ckpt")


def test_gradient_checkpointing_gives_same_gradients():
    x, t = inputs()
    grads = []
    for ckpt in (False, True):
        m = three_stream().train()
        m.enable_gradient_checkpointing(ckpt)
        sum(v.square().sum() for v in m(x, t).values()).backward()
        grads.append(m.in_proj["audio"].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bad_inputs_raise_clear_errors():
    m = three_stream()
    x, t = inputs()
    with pytest.raises(fb.FlowInputError, match=r"streams\['audio'\]: expected shape \(B, L, 4\)"):
        m({**x, "audio": torch.randn(2, 9, 3)}, t)
    with pytest.raises(fb.FlowInputError, match="unknown stream"):
        m({**x, "video": torch.randn(2, 3, 4)}, t)
    with pytest.raises(fb.FlowInputError, match=r"masks\['audio'\].*\(2, 9\)"):
        m(x, t, {"audio": torch.ones(2, 8, dtype=torch.bool)})
    with pytest.raises(fb.FlowInputError, match="bool"):
        m(x, t, {"audio": torch.ones(2, 9)})
    with pytest.raises(fb.FlowInputError, match=r"\[0, 1\]"):
        m(x, {**t, "text": torch.tensor([0.5, 1.2])})
    with pytest.raises(fb.FlowInputError, match="no time given"):
        m(x, {"gesture": t["gesture"]})
    with pytest.raises(fb.FlowInputError, match="step_sizes"):
        m(x, t, step_sizes={"video": 0.5})
    with pytest.raises(fb.FlowInputError, match="batch size"):
        m({**x, "text": torch.randn(3, 5, 5)}, t)


def expected_mmdit_params(dim, depth, streams, pooled_dim, ff_mult=4, heads=24, freq=256):
    """Closed-form parameter count of an MMDiT with no context-only streams."""
    hd = dim // heads
    inner = ff_mult * dim
    branch = (
        (dim * 6 * dim + 6 * dim)  # AdaLN-Zero
        + (dim * 3 * dim + 3 * dim)  # q, k, v
        + 2 * hd  # RMS q/k norm weights
        + (dim * dim + dim)  # attention output
        + (dim * inner + inner + inner * dim + dim)  # feed-forward
    )
    per_stream = (
        depth * branch
        + (freq * dim + dim + dim * dim + dim)  # time embedding MLP
        + (dim * 2 * dim + 2 * dim)  # AdaLN-continuous output norm
    )
    io = sum((i * dim + dim) + (dim * o + o) for i, o in streams)
    pooled = pooled_dim * dim + dim + dim * dim + dim
    return len(streams) * per_stream + io + pooled


def test_omniges_preset_on_meta_device():
    with torch.device("meta"):
        m = MMDiT.omniges()
    n = m.num_parameters()
    assert n == expected_mmdit_params(1536, 24, [(512, 512), (32, 32), (4096, 4096)], 2048)
    assert n == 3_101_518_880  # ~3.1B: 3 streams x 24 blocks x 42.5M + embeddings/heads
    assert len(m.blocks) == 24 and m.num_heads == 24 and m.dim == 1536


def test_dtype_follows_the_model_and_inputs():
    m = MMDiT.tiny(pooled_dim=3).to(torch.bfloat16)
    x = {
        "gesture": torch.randn(2, 5, 8, dtype=torch.bfloat16),
        "audio": torch.randn(2, 3, 4, dtype=torch.bfloat16),
    }
    out = m(x, {"gesture": torch.rand(2), "audio": 1.0}, pooled=torch.randn(2, 3).bfloat16())
    assert all(v.dtype == torch.bfloat16 for v in out.values())
    st = fb.SpatialTemporalDenoiser.tiny().to(torch.bfloat16)
    y = st(torch.randn(2, 8, 12).bfloat16(), 0.5, 0.1, torch.randn(2, 8, 12).bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_learned_tables_untimed_streams_and_qk_norm_kinds(one_thread):
    streams = {"gesture": StreamSpec(6, max_len=10, pos="learned"), "text": StreamSpec(5)}
    m = randomize(MMDiT(streams, dim=32, depth=2, num_heads=4, qk_norm="layer_norm").eval())
    # one shared LayerNorm per block, no per-stream q/k norm
    assert isinstance(m.blocks[0].norm_q, torch.nn.LayerNorm)
    assert isinstance(m.blocks[0].branches["text"].norm_q, torch.nn.Identity)
    x, t = inputs()
    xs, ts = {"gesture": x["gesture"], "text": x["text"]}, {"gesture": t["gesture"], "text": 0.5}
    # learned table: positions pick its rows; default rows 0..L-1
    rows = torch.arange(3, 10)
    a = m(xs, ts, positions={"gesture": rows})["gesture"]
    with torch.no_grad():
        m.pos_table["gesture"][:7] = m.pos_table["gesture"][3:10].clone()
    torch.testing.assert_close(m(xs, ts)["gesture"], a)  # same table rows, same result
    with pytest.raises(fb.FlowInputError, match=r"rows must lie in \[0, 10\)"):
        m(xs, ts, positions={"gesture": torch.arange(4, 11)})
    with pytest.raises(fb.FlowInputError, match="integer rows"):
        m(xs, ts, positions={"gesture": rows.float()})
    # an untimed stream: no embedding of its own; per-stream form borrows the first timed one's
    out = m.forward_with_states(xs, {**ts, "text": None}, per_stream_time=True, heads=["gesture"])
    assert set(out.velocity) == {"gesture"} and out.states["text"].shape == (2, 5, 32)
    cond = m.conditioning(
        {"gesture": t["gesture"], "text": None}, ["gesture", "text"], per_stream_time=True
    )
    assert cond["text"] is cond["gesture"]
    summed = m.conditioning({"gesture": t["gesture"], "text": None}, ["gesture", "text"])
    torch.testing.assert_close(summed["text"], m.time_embed["gesture"](t["gesture"]))
    with pytest.raises(fb.FlowInputError, match="at least one needs a time"):
        m(xs, {"gesture": None, "text": None})
    with pytest.raises(fb.FlowInputError, match="qk_norm"):
        MMDiT(streams, dim=32, depth=1, num_heads=4, qk_norm="group_norm")
