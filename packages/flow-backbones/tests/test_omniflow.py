"""OmniFlow import: parity with OmniFlow's own code, checkpoint errors, the gesture variant.

The data in ``tests/data/omniflow/`` were recorded by running OmniFlow's own
``OmniFlowTransformerModel`` (see that folder's README): two tiny seeded checkpoints in its
``save_pretrained`` layout and the outputs of every stream subset it can run.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import flow_backbones as fb
from flow_backbones import MMDiT
from flow_backbones.omniflow import omniflow_forward, patchify, unpatchify

DATA = Path(__file__).parent / "data" / "omniflow"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
RECORDS = np.load(DATA / "records.npz")
INPUTS = {k[3:]: torch.from_numpy(RECORDS[k]) for k in RECORDS.files if k.startswith("in_")}
WEIGHTS = "diffusion_pytorch_model.safetensors"
# tiny models: thread hand-offs cost more than they save (10x slower on a busy 2-core CPU)
pytestmark = pytest.mark.usefixtures("one_thread")

# Noise floor: the recorder ran OmniFlow itself in float32 and in float64 on the same inputs;
# its float32 outputs (magnitudes up to ~2) are off by at most 4.9e-7 (max over all runs).
# Ours differ from OmniFlow's float32 outputs by at most 6.0e-7 on the recording machine (the
# ulp-level differences of a fused q/k/v matmul and another summation order). 4x the floor
# leaves room for other CPUs' kernels; a wrong sign, norm or order is off by ~1.
FLOOR = max(v for r in MANIFEST["runs"] for v in r["floor"].values())
ATOL = 4 * FLOOR


def _none_folder(tmp: Path) -> Path:
    """qk_norm=None: the recorder ran OmniFlow built with qk_norm=None on the layer_norm
    weights minus their norm_q/norm_k; build that checkpoint folder here (saves 200 kB)."""
    folder = tmp / "none"
    folder.mkdir()
    cfg = json.loads((DATA / "layer_norm" / "config.json").read_text())
    cfg["qk_norm"] = None
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = load_file(DATA / "layer_norm" / WEIGHTS)
    save_file({k: v for k, v in sd.items() if ".attn.norm_" not in k}, folder / WEIGHTS)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    none = _none_folder(tmp_path_factory.mktemp("omniflow"))
    return {
        "layer_norm": MMDiT.from_omniflow(DATA / "layer_norm"),
        "rms_norm": MMDiT.from_omniflow(DATA / "rms_norm"),
        "none": MMDiT.from_omniflow(none),
    }


def run(model, present, split_cond, use_text_output, **overrides):
    kwargs = {**INPUTS, **overrides}
    with torch.no_grad():
        return omniflow_forward(
            model,
            **kwargs,
            split_cond=split_cond,
            use_text_output=use_text_output,
            drop_image="image" not in present,
            drop_text="text" not in present,
            drop_audio="audio" not in present,
        )


@pytest.mark.parametrize("mode", ["layer_norm", "rms_norm", "none"])
def test_matches_omniflow_for_every_recorded_stream_subset(models, mode):
    m = models[mode]
    assert m.blocks[0].norm_q is not None if mode == "layer_norm" else m.blocks[0].norm_q is None
    runs = [r for r in MANIFEST["runs"] if r["mode"] == mode]
    assert runs
    for r in runs:
        out = run(m, r["present"], r["split_cond"], r["use_text_output"])
        for key in ("output", "model_pred_text", "encoder_hidden_states", "audio_hidden_states"):
            if key not in r["outputs"]:
                # absent stream -> None, except model_pred_text which the recorder folded
                # into encoder_hidden_states when use_text_output=True
                if key == "encoder_hidden_states" and r["use_text_output"] and out[key] is not None:
                    assert out[key] is out["model_pred_text"]
                else:
                    assert out[key] is None, (r["name"], key)
                continue
            ref = torch.from_numpy(RECORDS[f"{r['name']}__{key}"])
            torch.testing.assert_close(out[key], ref, atol=ATOL, rtol=0, msg=r["name"] + key)


def test_reference_failures_are_refused_clearly(models):
    # OmniFlow's own forward crashes (TypeError deep in AdaLN) on these; ours says why
    failed = MANIFEST["failed"]
    assert failed
    for f in failed:
        _, streams, split, uto = f["name"].split("__")
        present = streams.split("-")
        with pytest.raises(fb.FlowInputError, match=r"split_cond|use_text_output"):
            run(models["layer_norm"], present, split == "split1", uto == "uto1")


def test_missing_audio_is_zeros_at_time_zero(models):
    m = models["layer_norm"]
    present = ["image", "text", "audio"]
    a = run(m, present, True, True, audio_hidden_states=None)
    zeros = torch.zeros_like(INPUTS["audio_hidden_states"])
    b = run(m, present, True, True, audio_hidden_states=zeros, timestep_audio=torch.zeros(2))
    for k in ("output", "model_pred_text", "audio_hidden_states"):
        assert torch.equal(a[k], b[k])


def test_plain_state_dict_files_and_rebuilt_tables(models, tmp_path):
    sd = load_file(DATA / "rms_norm" / WEIGHTS)
    assert any(k.startswith("text_decoder.") for k in sd)  # skipped by the importer
    # a plain .pt with a DataParallel prefix and the full audio table OmniFlow keeps
    table = fb.omniflow._sincos_2d(16, 192, 128)[None]
    torch.save(
        {"module." + k: v for k, v in {**sd, "audio_embedder.pos_embed": table}.items()},
        tmp_path / "t.pt",
    )
    save_file(sd, tmp_path / "t.safetensors")
    ref = models["rms_norm"].state_dict()
    for f in ("t.pt", "t.safetensors"):
        m = MMDiT.from_omniflow(tmp_path / f)  # no config: heads from the q-norm width
        assert m.num_heads == 2 and m.blocks[0].branches["text"].norm_q.weight.shape == (8,)
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref[k]), (f, k)


def _broken(tmp_path, edit, name="bad.safetensors"):
    sd = load_file(DATA / "layer_norm" / WEIGHTS)
    edit(sd)
    save_file(sd, tmp_path / name)
    return tmp_path / name


def test_bad_checkpoints_name_file_and_key(tmp_path):
    with pytest.raises(fb.CheckpointError, match="not found"):
        MMDiT.from_omniflow(tmp_path / "nowhere")
    key = "transformer_blocks.1.attn.to_aud_out.weight"
    f = _broken(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(fb.CheckpointError, match=rf"bad\.safetensors: missing key '{key}'"):
        MMDiT.from_omniflow(f)
    f = _broken(tmp_path, lambda sd: sd.update({"clip_proj.0.weight": torch.zeros(2)}))
    with pytest.raises(fb.CheckpointError, match=r"unexpected key.*clip_proj"):
        MMDiT.from_omniflow(f)
    key = "transformer_blocks.0.attn.add_k_proj.weight"
    f = _broken(tmp_path, lambda sd: sd.update({key: torch.zeros(16, 15)}))
    with pytest.raises(fb.CheckpointError, match=rf"{key}' expected shape \(16, 16\), found"):
        MMDiT.from_omniflow(f)
    key = "norm_out_aud.linear.bias"
    f = _broken(tmp_path, lambda sd: sd[key].__setitem__(3, float("nan")))
    with pytest.raises(fb.CheckpointError, match=rf"{key}' holds NaN"):
        MMDiT.from_omniflow(f)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(fb.CheckpointError, match=r"junk\.safetensors: cannot read"):
        MMDiT.from_omniflow(tmp_path / "junk.safetensors")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(fb.CheckpointError, match="no weights file"):
        MMDiT.from_omniflow(tmp_path / "empty")


def test_imported_model_saves_and_reloads_bit_identical(models, tmp_path):
    m = models["layer_norm"]
    m.save_pretrained(tmp_path / "ckpt")
    m2 = MMDiT.from_pretrained(tmp_path / "ckpt")
    assert m2.specs == m.specs and m2.time_input == "sigma"
    a = run(m, ["image", "text", "audio"], False, True)
    b = run(m2, ["image", "text", "audio"], False, True)
    for k in ("output", "model_pred_text", "audio_hidden_states"):
        assert torch.equal(a[k], b[k])


def test_patchify_is_the_conv_patch_embedding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g)
    tok = patchify(x, 2)
    assert tok.shape == (2, 12, 12)
    assert torch.equal(unpatchify(tok, 3, 8, 6, 2), x)
    conv = torch.nn.Conv2d(3, 5, kernel_size=2, stride=2)
    ref = conv(x).flatten(2).transpose(1, 2)  # row-major patch tokens, as diffusers' PatchEmbed
    lin = tok @ conv.weight.permute(0, 2, 3, 1).reshape(5, -1).T + conv.bias
    # float32 noise floor: both are 12-term dot products of O(1) values, ~1e-7 apart
    torch.testing.assert_close(lin, ref, atol=1e-6, rtol=0)
    with pytest.raises(fb.FlowInputError, match="divisible"):
        patchify(torch.randn(1, 3, 7, 6), 2)


def omniflow_params(D, L, J, P, C, p, M, Ca, T, hd, keep_image=True, gesture=512, gmax=128):
    """OmniFlow's trainable parameter count, from its state-dict layout (qk_norm=layer_norm),
    with two changes of ours: the sin-cos tables are parameters (the image's M*M rows, the
    audio's 1024 used rows), and the last block's unused ff_context is not built."""

    def lin(i, o):
        return i * o + o

    ff = lin(D, 4 * D) + lin(4 * D, D)
    branch = lin(D, 6 * D) + 3 * lin(D, D) + lin(D, D) + ff
    blocks = L * 3 * branch + L * 2 * (2 * hd)  # + shared LayerNorm q/k (weight, bias)
    blocks -= lin(D, 6 * D) + lin(D, D) + ff  # last text branch: AdaLN-continuous, no out/ff
    blocks += lin(D, 2 * D)
    times = 3 * (lin(256, D) + lin(D, D) + lin(P, D) + lin(D, D))
    if keep_image:
        image = D * C * p * p + D + lin(D, p * p * C) + M * M * D
    else:
        image = lin(gesture, D) + lin(D, gesture) + gmax * D
    heads = lin(D, 2 * D) + lin(D, J) + lin(D, 2 * J) + lin(J, T) + lin(D, 2 * D)
    audio = D * Ca * 4 + D + lin(D, 4 * Ca) + 1024 * D
    return blocks + times + image + heads + audio + lin(J, D)


def test_paper_size_on_meta_device(models):
    paper = dict(D=1536, L=24, J=4096, P=2048, C=16, p=2, M=96, Ca=8, T=1536, hd=64)
    with torch.device("meta"):
        m = MMDiT.omniflow()
        g = MMDiT.omniflow(keep_image=False)
    assert m.num_parameters() == omniflow_params(**paper)
    assert g.num_parameters() == omniflow_params(**paper, keep_image=False)
    assert len(m.blocks) == 24 and m.num_heads == 24 and m.dim == 1536
    assert list(g.specs) == ["gesture", "text", "audio"]
    # the imported tiny model has the layout of the preset at its own size
    tiny = dict(D=16, L=2, J=32, P=24, C=4, p=2, M=8, Ca=1, T=12, hd=8)
    assert models["layer_norm"].num_parameters() == omniflow_params(**tiny)


def test_gesture_variant_imports_the_image_branch_and_learns():
    torch.manual_seed(0)
    m = MMDiT.from_omniflow(DATA / "layer_norm", keep_image=False)
    img = MMDiT.from_omniflow(DATA / "layer_norm")
    assert list(m.specs) == ["gesture", "text", "audio"]
    s = m.specs["gesture"]
    assert (s.in_dim, s.output_dim, s.max_len, s.pos) == (512, 512, 128, "learned")
    ref = img.state_dict()
    for k, v in m.state_dict().items():
        # new: entry, table and head (zero: the new stream starts predicting v = 0)
        if not k.startswith(("in_proj.gesture", "proj_out.gesture", "pos_table.gesture")):
            assert torch.equal(v, ref[k.replace(".gesture", ".image")]), k
    assert m.proj_out["gesture"].weight.abs().max() == 0
    torch.manual_seed(0)
    m = MMDiT.from_omniflow(
        DATA / "layer_norm", keep_image=False, gesture_dim=8, gesture_max_len=32
    )
    assert m.specs["gesture"].in_dim == 8 and m.pos_table["gesture"].shape == (32, 16)

    # flow-matching steps on a fixed batch of random gesture latents, conditioned on clean
    # text (library time 1): the loss on fixed noise and times must fall
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(4, 16, 8, generator=g)
    text = torch.randn(4, 5, 32, generator=g)
    pooled = torch.randn(4, 24, generator=g)
    x0_eval, t_eval = torch.randn(4, 16, 8, generator=g), torch.rand(4, generator=g)

    def loss(x0, t):
        xt = t[:, None, None] * x1 + (1 - t[:, None, None]) * x0
        v = m({"gesture": xt, "text": text}, {"gesture": t, "text": 1.0}, pooled=pooled)
        return (v["gesture"] - (x1 - x0)).square().mean()

    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    with torch.no_grad():
        before = loss(x0_eval, t_eval).item()
    for _ in range(50):
        opt.zero_grad()
        loss(torch.randn(4, 16, 8, generator=g), torch.rand(4, generator=g)).backward()
        opt.step()
    with torch.no_grad():
        after = loss(x0_eval, t_eval).item()
    # zero output head: the loss starts at the sample's E|x1 - x0|^2 (2 in expectation;
    # 1.90-2.16 over seeds 0-3); after 50 steps it is 0.70-0.85 of that over those seeds
    assert 1.7 < before < 2.3
    assert after < 0.9 * before, (before, after)
