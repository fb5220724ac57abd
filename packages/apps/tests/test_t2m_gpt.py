"""Utterance-to-motion (T2M-GPT) end to end on Korean synthetic utterances.

One small HumanML3D-layout dataset of the synthetic corpus's Korean clips (gestures tied to
the words they are spoken with: synthetic.SEMANTIC_WORDS); the tiny VQ-VAE, the tiny GPT and
the tiny evaluator are trained once per session on its train split.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from gesture_apps.cli import main

NUM_CLIPS = 200  # 4 s each, 80 frames at 20 fps: 120 train, 40 val, 40 test
SECONDS = 4.0
EVAL_BATCH = 32  # HumanML3D's R-precision batch (the reference protocol)
REPLICATIONS = 4
# Margins from the validation split (seed 0, 4 replications of one 32-caption batch; 1 thread):
# own text R-precision top-3 0.156 vs 0.109 / 0.078 for the shift-1 / shift-7 derangements
# (95% half-widths 0.05-0.07), matching score 5.59 vs 6.52 / 6.46 (half-widths 0.08-0.27),
# pair FID 9.95 vs 14.70 / 14.30 (half-widths 1.4-2.1). Asserted: half the smaller validation
# gap. Test split measured: 0.188 vs 0.102 / 0.055, 5.31 vs 6.64 / 6.54, 10.9 vs 21.8 / 20.2.
R3_MARGIN = 0.023
PAIR_FID_MARGIN = 2.1
MATCH_MARGIN = 0.43


def _build(root, num_clips: int, seconds: float):
    """The synthetic corpus's Korean clips as a HumanML3D folder: SMPL-X motion -> approximate
    joints (first 22) at 20 fps -> 263-d features; the transcript is the caption."""
    from gesture_data.datasets import humanml3d
    from gesture_data.datasets.synthetic import make_clip
    from gesture_data.skeleton import smplx_joints_approx

    motions, captions, ids = {}, {}, []
    for i in range(num_clips):
        clip = make_clip(i, seconds, 0, "ko")
        joints = smplx_joints_approx(clip.poses, clip.trans)[:, :22].numpy()
        keep = np.round(np.arange(0, len(joints), clip.fps / 20.0)).astype(int)
        cid = f"ko_{i:04d}"
        motions[cid] = joints[keep[keep < len(joints)]]
        captions[cid] = [humanml3d.make_caption(" ".join(w for _, _, w in clip.words), "ko")]
        ids.append(cid)
    splits = {"test": ids[0::5], "val": ids[1::5]}
    splits["train"] = [c for c in ids if c not in splits["test"] and c not in splits["val"]]
    return humanml3d.write_dataset(root, motions, captions, splits)


@pytest.fixture(scope="session")
def t2m_data(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("ktubeum_synth"), NUM_CLIPS, SECONDS)


@pytest.fixture(scope="session")
def t2m_tokenizer(t2m_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2m_tok")
    argv = ["train", "tokenizer", "--preset", "tokenizer/t2m_tiny", "--out", str(out)]
    assert main([*argv, f"data.root={t2m_data}", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def t2m_run(t2m_data, t2m_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2m_gpt")
    argv = ["train", "t2m-gpt", "--preset", "t2m_gpt/tiny", "--tokenizer", str(t2m_tokenizer)]
    assert main([*argv, "--data", str(t2m_data), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def t2m_evaluator(t2m_data, tmp_path_factory):
    from gesture_apps.systems.t2m_gpt.evaluator import load_evaluator

    out = tmp_path_factory.mktemp("t2m_eval")
    argv = ["train", "t2m-evaluator", "--preset", "t2m_evaluator/tiny", "--data", str(t2m_data)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    return load_evaluator(out)


def _scores(run, data, evaluator, split: str, shift: int) -> dict:
    """evaluate_t2m of the trained bundle; ``shift > 0`` gives every caption of a batch the
    motion generated for the caption ``shift`` places after it (a fixed derangement: the
    same model, another utterance's text)."""
    from gesture_apps.systems.t2m_gpt.evaluate import evaluate_t2m
    from gesture_apps.systems.t2m_gpt.pipeline import T2MPipeline

    pipe = T2MPipeline.from_pretrained(run)

    def generate(captions, lengths):
        del lengths  # T2M-GPT stops at End
        return pipe(captions[shift:] + captions[:shift], seed=0)

    return evaluate_t2m(
        generate, data, evaluator, split=split, batch_size=EVAL_BATCH, replications=REPLICATIONS
    )


def test_t2m_gpt_follows_the_utterance(t2m_run, t2m_data, t2m_evaluator):
    """The must-show: on the held-out test split, motion generated from each utterance matches
    that utterance (the evaluator's R-precision top-3) better than the same model given another
    utterance's text (shift 1 and shift 7 derangements of each batch)."""
    own = _scores(t2m_run, t2m_data, t2m_evaluator, "test", 0)
    others = [_scores(t2m_run, t2m_data, t2m_evaluator, "test", k) for k in (1, 7)]
    print({"own": own, "others": others})
    for other in others:
        assert own["r_precision_top3"] >= other["r_precision_top3"] + R3_MARGIN
        assert own["matching_score"] <= other["matching_score"] - MATCH_MARGIN
        assert own["pair_fid"] <= other["pair_fid"] - PAIR_FID_MARGIN
    # FID over motion alone cannot rank them: a derangement of a batch's captions conditions
    # the same multiset of captions, so the generated set has one distribution either way
    # (measured, val: 2.85 own vs 2.58 / 3.02; test: 4.10 vs 4.33 / 4.38). The pair FID
    # (evaluate_t2m: FID of concatenated (caption, motion) embeddings against the ground
    # truth's pairs) is the conditional form of the same statistic, and that one is asserted.


def test_eval_cli_scores_a_bundle_as_evaluate_t2m_does(t2m_run, t2m_data, t2m_evaluator, tmp_path):
    """`gesture eval t2m --bundle` is evaluate_t2m of the bundle's pipeline: the same numbers
    (the same seeded generation and shuffles; the JSON holds them exactly)."""
    import itertools
    import json

    from gesture_apps.systems.t2m_gpt.evaluate import evaluate_t2m
    from gesture_apps.systems.t2m_gpt.pipeline import T2MPipeline

    out = tmp_path / "t2m.json"
    argv = ["eval", "t2m", "--evaluator", str(t2m_evaluator.folder), "--data", str(t2m_data)]
    mm = ["--mm-samples", "4", "--mm-repeats", "3"]
    assert main([*argv, "--bundle", str(t2m_run), *mm, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    pipe = T2MPipeline.from_pretrained(t2m_run)
    calls = itertools.count()  # the CLI's rule: call k samples with seed k

    def generate(captions, lengths):
        return pipe(captions, seed=next(calls))

    want = evaluate_t2m(generate, t2m_data, t2m_evaluator, mm_samples=4, mm_repeats=3)
    assert report["split"] == "test" and report["metrics"] == want
    assert want["multimodality"] > 0  # the pipeline samples (categorical): repeats differ


def test_t2m_gpt_cli_resume_is_exact(t2m_data, t2m_tokenizer, tmp_path):
    """4 steps straight == 2 steps, then --resume for 2 more: the same weights, bit for bit
    (corruption draws, dropout and data order all come back with the checkpoint)."""
    base = ["train", "t2m-gpt", "--preset", "t2m_gpt/tiny", "--tokenizer", str(t2m_tokenizer)]
    base += ["--data", str(t2m_data), "--no-progress"]
    short = ["train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*base, "--out", str(a), *short]) == 0
    assert main([*base, "--out", str(b), "--steps", "2", *short]) == 0
    assert main(["train", "t2m-gpt", "--resume", str(b), "--no-progress"]) == 0
    wa = load_file(a / "checkpoints" / "step_0000004" / "model.safetensors")
    wb = load_file(b / "checkpoints" / "step_0000004" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    # and the run is not a no-op: 4 steps moved the weights away from the 2-step ones
    w2 = load_file(b / "checkpoints" / "step_0000002" / "model.safetensors")
    assert any(not (w2[k] == wb[k]).all() for k in wb)


def test_generate_t2m_bundle_writes_npy_and_mp4(t2m_run, t2m_data, tmp_path, capsys):
    from gesture_data.datasets.humanml3d import HumanML3DReader

    reader = HumanML3DReader(t2m_data)
    clip = reader.ids("test")[0]
    caption = reader.texts(clip)[0].caption
    out = tmp_path / "motion.npy"
    bundle = t2m_run / "t2m_gpt"
    assert main(["generate", "--bundle", str(bundle), "--text", caption, "--out", str(out)]) == 0
    feats = np.load(out)
    joints = np.load(tmp_path / "motion_joints.npy")
    assert feats.ndim == 2 and feats.shape[1] == 263 and len(feats) % 4 == 0
    assert joints.shape == (len(feats), 22, 3) and np.isfinite(joints).all()
    # the CLI is the pipeline: the same seed gives the same motion
    from gesture_apps.systems.t2m_gpt.pipeline import generate_from_bundle

    np.testing.assert_array_equal(generate_from_bundle(bundle, [caption])[0], feats)
    gt = tmp_path / "gt.npy"
    np.save(gt, reader.features(clip))
    video = tmp_path / "motion.mp4"
    argv = ["generate", "--bundle", str(t2m_run), "--text", caption, "--out", str(video)]
    assert main([*argv, "--gt", str(gt)]) == 0
    import imageio.v3 as iio

    frames = iio.imread(video)  # (T, H, W, 3): generated | ground truth side by side
    assert frames.shape[0] == min(len(feats), len(reader.features(clip)))
    assert frames.shape[2] > frames.shape[1]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--text", "", "--out", "{tmp}/m.npy"], "--text"),
        (["--text", "나는 생각", "--out", "{tmp}/m.wav"], ".npy"),
        (["--text", "나는 생각", "--out", "{tmp}/m.npy", "--gt", "{tmp}/gt.npy"], "--gt"),
        (["--text", "나는 생각", "--out", "{tmp}/m.mp4", "--gt", "{tmp}/none.npy"], "not found"),
        (["--text", "나는 생각", "--out", "{tmp}/m.npy", "--audio", "a.wav"], "--audio"),
    ],
)
def test_generate_t2m_bad_input_exits_2(t2m_run, tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["generate", "--bundle", str(t2m_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not list(tmp_path.glob("m.*"))


def test_train_t2m_gpt_bad_input_exits_2(t2m_data, t2m_tokenizer, tmp_path, capsys):
    base = ["train", "t2m-gpt", "--preset", "t2m_gpt/tiny", "--no-progress"]
    cases = [
        ([*base, "--tokenizer", str(t2m_tokenizer), "--data", str(tmp_path / "none")], "none"),
        ([*base, "--data", str(t2m_data)], "--tokenizer"),
        ([*base, "--tokenizer", str(t2m_data), "--data", str(t2m_data)], "tokenizer"),
        ([*base, "--tokenizer", str(t2m_tokenizer), "text.encoder=clip"], "text.encoder"),
        ([*base, "--tokenizer", str(t2m_tokenizer), "data.max_frames=400"], "block_size"),
    ]
    for argv, needle in cases:
        assert main([*argv, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_tokenizer_vqvae_reads_humanml3d_only(tmp_path, capsys):
    """model.kind=vqvae needs a HumanML3D folder; a BEAT2 recipe refuses one."""
    argv = ["train", "tokenizer", "--preset", "tokenizer/t2m_tiny", "--no-progress"]
    assert main([*argv, "data.source=synthetic", "--out", str(tmp_path / "a")]) == 2
    assert "humanml3d" in capsys.readouterr().err
    argv = ["train", "tokenizer", "--preset", "tokenizer/tiny", "--no-progress"]
    assert main([*argv, f"data.source=humanml3d:{tmp_path}", "--out", str(tmp_path / "b")]) == 2
    assert "vqvae" in capsys.readouterr().err


def test_tokenizer_objective_is_t2m_gpts_loss():
    """smooth-L1 over the 263 channels + 0.02 commitment + 0.5 x smooth-L1 on the root-relative
    positions [4:67] (T2M-GPT's `loss_vel`), recomputed by hand on one batch."""
    import torch
    from torch.nn import functional as F

    from gesture_apps.systems.tokenizer.config import LossConfig, TokenizerModelConfig
    from gesture_apps.systems.tokenizer.model import TokenizerObjective, build_tokenizer

    torch.manual_seed(0)
    cfg = TokenizerModelConfig(kind="vqvae", size="tiny")
    assert cfg.parts == ("motion",)
    loss_cfg = LossConfig(commit_weight=0.02, local_pos_weight=0.5)
    objective = TokenizerObjective(build_tokenizer(cfg), cfg.parts, loss_cfg).eval()
    x = torch.randn(2, 16, 263)
    loss, metrics = objective({"motion": x})
    out = objective.tokenizer(x)
    want = F.smooth_l1_loss(out.recon, x) + 0.02 * out.commit_loss
    want = want + 0.5 * F.smooth_l1_loss(out.recon[..., 4:67], x[..., 4:67])
    # same float32 ops in the same order: equal up to the summation order (1e-6 relative)
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=0)
    assert metrics["local_pos/motion"] > 0


def test_text_condition_specs(tmp_path):
    """``transformers:PATH`` loads a local BERT-like folder (mean-pooled, L2-normalised);
    unknown specs and missing folders are refused with the key named."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from gesture_apps.errors import ConfigError
    from gesture_apps.systems.t2m_gpt.text import TextCondition

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "나는", "생각", "바다"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg).save_pretrained(tmp_path)
    text = TextCondition(f"transformers:{tmp_path}")
    e = text.embed(["나는 생각", "바다", "나는 생각"])
    assert e.shape == (3, 16) and text.dim == 16
    np.testing.assert_array_equal(e[0], e[2])  # cached per caption
    assert not np.allclose(e[0], e[1])
    with pytest.raises(ConfigError, match=r"text\.encoder"):
        TextCondition("clip")
    with pytest.raises(ConfigError, match=r"config\.json"):
        TextCondition(f"transformers:{tmp_path / 'none'}")


def test_text_condition_clip_and_t5_folders(tmp_path):
    """A local CLIP text model gives its projected embedding (T2M-GPT's condition), a T5 /
    KE-T5 encoder its mask-weighted mean of the last hidden states (tiny random models; the
    tokenizer is a BERT word-piece one, which AutoTokenizer reads from tokenizer_config)."""
    import torch
    from transformers import (
        BertTokenizer,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from gesture_apps.systems.t2m_gpt.text import TextCondition

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "나는", "생각", "바다"]
    captions = ["나는 생각 바다", "바다"]
    torch.manual_seed(0)
    models = {
        "clip": CLIPTextModelWithProjection(
            CLIPTextConfig(
                vocab_size=len(words),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=16,
                projection_dim=8,
                eos_token_id=3,
                pad_token_id=0,
            )
        ),
        "t5": T5EncoderModel(
            T5Config(vocab_size=len(words), d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32)
        ),
    }
    for name, model in models.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        tok = BertTokenizer(str(folder / "vocab.txt"))
        tok.save_pretrained(folder)
        model.eval().save_pretrained(folder)
        got = TextCondition(f"transformers:{folder}").embed(captions)
        enc = tok(captions, padding=True, return_tensors="pt")
        with torch.no_grad():
            if name == "clip":
                want = model(**enc).text_embeds.numpy()
            else:
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                want = ((h * m).sum(1) / m.sum(1)).numpy()
        assert got.shape == (2, 8 if name == "clip" else 16)
        # the same model on the same tokens: float32 summation order only (measured 0.0)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
