"""OmniHuman's Wan2.1 adapter: a tiny WanTransformer3DModel saved with save_pretrained loads
through WanBackbone, equals the plain transformer at init (our t / velocity conventions),
gains frame-local audio, extra channels and a text projection, trains, and round-trips."""

import copy
import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from gesture_apps.errors import GenerationError
from gesture_apps.systems.omnihuman.wan import WanBackbone

B, C, T, H, W = 2, 8, 3, 4, 6  # latents: 3 latent frames of a 2 x 3 token grid


def _plain(seed: int = 0) -> WanTransformer3DModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(**WanBackbone.tiny_transformer().config).eval()


def _inputs(seed: int = 0, text_dim: int = 32, audio_dim: int = 16, extra: int = 3):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(B, C, T, H, W, generator=g),
        "t": torch.rand(B, generator=g),
        "channels": torch.randn(B, extra, T, H, W, generator=g),
        "text": torch.randn(B, 5, text_dim, generator=g),
        "frame_tokens": torch.randn(B, T, 4, audio_dim, generator=g),
    }


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    """A Wan2.1 pipeline root whose transformer/ is a tiny WanTransformer3DModel."""
    root = tmp_path_factory.mktemp("wan")
    _plain().save_pretrained(root / "transformer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    return root


def _randomise(net: WanBackbone, seed: int = 1) -> None:
    """Give the zero-initialised branches non-zero weights (what training would do)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for attn in net.conditions.audio:
            for p in attn.attn.out_proj.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        pe = net.transformer.patch_embedding
        pe.weight[:, C:] = 0.3 * torch.randn(pe.weight[:, C:].shape, generator=g)


def test_adapted_model_equals_the_plain_transformer_in_our_convention(wan_folder):
    """At init the extra channels and the audio branch change nothing, bit for bit: the output
    is minus Wan's (noise - x0) prediction at timestep 1000 (1 - t)."""
    plain = _plain()
    for folder in (wan_folder, wan_folder / "transformer"):  # pipeline root or its transformer/
        net = WanBackbone.from_pretrained(folder, extra_channels=3, audio_dim=16).eval()
        assert (net.latent_channels, net.extra_channels, net.text_dim) == (C, 3, 32)
        assert net.transformer.config.in_channels == C + 3
        inp = _inputs()
        with torch.no_grad():
            v = net(
                inp["x"],
                inp["t"],
                channels=torch.zeros(B, 3, T, H, W),
                text=inp["text"],
                frame_tokens=inp["frame_tokens"],  # random tokens: the branch is zero at init
            )
            wan = plain(inp["x"], 1000 * (1 - inp["t"]), inp["text"], return_dict=False)[0]
        # exact: the widened patch embedding runs the pretrained conv unchanged plus an
        # exactly-zero term, and the audio residual is exactly zero
        assert torch.equal(v, -wan)


def test_audio_attention_is_frame_local_and_skips_the_reference(wan_folder):
    """With the audio branch only after the last block (whose output reaches each token's own
    output alone) and non-zero weights, changing latent frame k's audio tokens changes the
    velocity of frame k and of no other frame; the reference frame ignores its tokens."""
    net = WanBackbone.from_pretrained(wan_folder, extra_channels=3, audio_dim=16, audio_layers=[1])
    _randomise(net)
    net.eval()
    inp = _inputs()
    kw = {"channels": inp["channels"], "text": inp["text"]}
    other = inp["frame_tokens"].clone()
    other[:, 1] += torch.randn(other[:, 1].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = net(inp["x"], inp["t"], frame_tokens=inp["frame_tokens"], **kw)
        moved = net(inp["x"], inp["t"], frame_tokens=other, **kw)
        silent = net(inp["x"], inp["t"], frame_tokens=None, **kw)
    diff = (moved - base).abs().amax(dim=(0, 1, 3, 4))  # per latent frame
    assert diff[1] > 1e-2, diff  # measured 1.03
    assert diff[0] == 0 and diff[2] == 0, diff  # other frames are untouched, exactly
    assert (silent - base).abs().amax() > 1e-2  # the trained branch is live (measured 1.27)
    # reference_frames=1: frame 0 is the reference, its audio tokens are ignored
    ref = inp["frame_tokens"].clone()
    ref[:, 0] = 100.0
    with torch.no_grad():
        a = net(inp["x"], inp["t"], frame_tokens=inp["frame_tokens"], reference_frames=1, **kw)
        b = net(inp["x"], inp["t"], frame_tokens=ref, reference_frames=1, **kw)
    assert torch.equal(a, b)


def test_the_extra_channels_reach_the_output_once_trained(wan_folder):
    net = WanBackbone.from_pretrained(wan_folder, extra_channels=3)
    inp = _inputs()
    kw = {"text": inp["text"], "frame_tokens": None}
    with torch.no_grad():
        zero = net(inp["x"], inp["t"], channels=torch.zeros(B, 3, T, H, W), **kw)
        same = net(inp["x"], inp["t"], channels=inp["channels"], **kw)
        assert torch.equal(zero, same)  # zero-initialised: pose features do nothing yet
        _randomise(net)
        moved = net(inp["x"], inp["t"], channels=inp["channels"], **kw)
    assert (moved - zero).abs().amax() > 1e-2  # measured 2.01


def test_flow_matching_steps_lower_the_loss():
    """Our convention end to end: x_t = t x1 + (1 - t) x0, target x1 - x0, with every
    condition (extra channels, a projected 24-d text, audio tokens) fed."""
    torch.manual_seed(0)
    net = WanBackbone.tiny(extra_channels=2, audio_dim=16, text_dim=24, seed=0)
    assert net.conditions.text_proj is not None  # 24-d features -> Wan's 32-d text branch
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, C, T, H, W, generator=g).cumsum(dim=2) / 2  # smooth in time
    x0 = torch.randn(4, C, T, H, W, generator=g)
    t = torch.linspace(0.1, 0.9, 4)
    cond = {
        "channels": torch.randn(4, 2, T, H, W, generator=g),
        "text": torch.randn(4, 5, 24, generator=g),
        "text_mask": torch.tensor([[True] * 5, [True] * 3 + [False] * 2] * 2),
        "frame_tokens": torch.randn(4, T, 4, 16, generator=g),
    }
    xt = t.view(-1, 1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1, 1)) * x0

    def loss() -> torch.Tensor:
        return (net(xt, t, **cond) - (x1 - x0)).pow(2).mean()

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    with torch.no_grad():
        start = loss().item()
    for _ in range(25):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        end = loss().item()
    # measured 1.75 -> 0.72 (ratio 0.41; 0.41-0.47 over seeds 0-3, the same at 1 and 2
    # threads): 0.6 leaves room above that spread; a sign-flipped target or a dead gradient
    # stays near 1
    assert end < 0.6 * start, (start, end)
    # the zero-initialised branches learned (they receive gradient through the residuals)
    assert net.conditions.audio[0].attn.out_proj.weight.abs().sum() > 0
    assert net.transformer.patch_embedding.weight[:, C:].abs().sum() > 0


def test_save_load_round_trip(wan_folder, tmp_path):
    net = WanBackbone.from_pretrained(wan_folder, extra_channels=3, audio_dim=16, text_dim=24)
    _randomise(net)
    net.save_pretrained(tmp_path / "ours")
    for f in ("config.json", "model.safetensors", "transformer/config.json"):
        assert (tmp_path / "ours" / f).is_file(), f
    # the transformer alone is a plain diffusers model, 3 channels wider
    plain = WanTransformer3DModel.from_pretrained(tmp_path / "ours" / "transformer")
    assert (plain.config.in_channels, plain.config.out_channels) == (C + 3, C)
    loaded = WanBackbone.from_pretrained(tmp_path / "ours")
    assert (loaded.extra_channels, loaded.audio_dim, loaded.text_dim) == (3, 16, 24)
    inp = _inputs(text_dim=24)
    with torch.no_grad():
        assert torch.equal(loaded(**inp), net.eval()(**inp))
    with pytest.raises(GenerationError, match=r"audio_dim is 16, asked for 32"):
        WanBackbone.from_pretrained(tmp_path / "ours", audio_dim=32)


def test_wan_1_3b_architecture():
    with torch.device("meta"):
        net = WanBackbone.wan_1_3b(extra_channels=5, audio_dim=384, text_dim=384)
    n = sum(p.numel() for p in net.transformer.parameters())
    # Wan2.1-T2V-1.3B: 1,418,996,800 parameters, plus 5 x 1536 x 4 zero patch-embedding weights
    assert n == 1_418_996_800 + 5 * 1536 * 4
    assert len(net.conditions.audio) == 30 and net.conditions.text_proj.in_features == 384


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x": torch.zeros(B, 4, T, H, W)}, r"x: expected shape \(B, 8, T, H, W\)"),
        ({"x": torch.zeros(B, C, T, 5, W)}, "x: H x W = 5 x 6, expected even"),
        ({"t": torch.zeros(3)}, r"t: expected shape \(2,\), found \(3,\)"),
        ({"channels": None}, r"channels: required, shape \(2, 3, 3, 4, 6\)"),
        ({"channels": torch.zeros(B, 2, T, H, W)}, r"channels: expected shape \(2, 3, 3, 4, 6\)"),
        ({"text": torch.zeros(B, 5, 31)}, r"text: expected shape \(2, S, 32\)"),
        ({"text_mask": torch.ones(B, 4, dtype=bool)}, r"text_mask: expected shape \(2, 5\)"),
        ({"frame_tokens": torch.zeros(B, 2, 4, 16)}, r"frame_tokens: expected shape \(2, 3, F, 16"),
        ({"reference_frames": 3}, r"reference_frames: expected 0 <= r < T = 3, found 3"),
        ({"x": torch.full((B, C, T, H, W), float("nan"))}, "x: contains NaN"),
    ],
)
def test_bad_input_raises_clear_errors(wan_folder, change, match):
    net = WanBackbone.from_pretrained(wan_folder, extra_channels=3, audio_dim=16)
    inp = {**_inputs(), **change}
    with pytest.raises(GenerationError, match=match):
        net(inp.pop("x"), inp.pop("t"), **inp)


def test_bad_folders_raise_clear_errors(tmp_path):
    with pytest.raises(GenerationError, match="Wan transformer folder not found"):
        WanBackbone.from_pretrained(tmp_path / "nowhere")
    net = WanBackbone.tiny()
    with pytest.raises(GenerationError, match="frame_tokens: this backbone has no audio branch"):
        net(torch.zeros(1, C, 1, 2, 2), torch.ones(1), text=torch.zeros(1, 2, 32),
            frame_tokens=torch.zeros(1, 1, 1, 4))  # fmt: skip
    folder = tmp_path / "t"
    net.transformer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DModel"}))
    with pytest.raises(GenerationError, match="_class_name must be WanTransformer3DModel"):
        WanBackbone.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(GenerationError, match="cannot load the transformer"):
        WanBackbone.from_pretrained(folder)


def test_text_mask_feeds_zero_vectors_and_copies_keep_their_own_branch():
    """Padded text positions become the zero vectors Wan's pipeline feeds past a prompt's end;
    a deep copy (EMA, export) hooks its own audio modules, not the original's."""
    net = WanBackbone.tiny(audio_dim=16, audio_layers=[1]).eval()
    inp = _inputs(extra=0)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    kw = {"frame_tokens": inp["frame_tokens"]}
    with torch.no_grad():
        masked = net(inp["x"], inp["t"], text=inp["text"], text_mask=mask, **kw)
        zeroed = net(inp["x"], inp["t"], text=inp["text"] * mask[..., None], **kw)
        assert torch.equal(masked, zeroed)
        copy_ = copy.deepcopy(net)
        _randomise(copy_)
        assert torch.equal(net(inp["x"], inp["t"], text=inp["text"], **kw), net(
            inp["x"], inp["t"], text=inp["text"], frame_tokens=None))  # fmt: skip
        moved = copy_(inp["x"], inp["t"], text=inp["text"], **kw)
    assert (moved - zeroed).abs().amax() > 1e-2  # the copy's own (randomised) branch acts
