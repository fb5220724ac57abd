"""Guo et al. 2022 text/motion evaluators and the HumanML3D metrics against T2M-GPT's own code.

``data/t2m_evaluator_reference/`` holds a seeded small evaluator in the official
``finest.tar`` layout and what T2M-GPT's ``EvaluatorModelWrapper`` and ``utils/eval_trans.py``
computed from it (see its README.md for repository, commit and script).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_eval.errors import EvalError
from gesture_eval.text2motion import (
    POS_CATEGORIES,
    T2MEvaluator,
    T2MMetrics,
    WordVectorizer,
    contrastive_loss,
    diversity,
    euclidean_distance_matrix,
    frechet_distance,
    matching_score,
    multimodality,
    r_precision,
    t2m_metrics,
)

REF = Path(__file__).parent / "data" / "t2m_evaluator_reference"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF / "reference_outputs.npz"))


@pytest.fixture(scope="module")
def inputs(ref):
    # the same PCG64 stream record.py drew from (N, L, T = 128, 12, 32)
    n, length, t = 128, 12, 32
    rng = np.random.default_rng(20261201)
    word = rng.standard_normal((n, length, 24)).astype(np.float32)
    pos = np.eye(15, dtype=np.float32)[rng.integers(0, 15, (n, length))]
    cap = np.sort(rng.integers(3, length + 1, n))[::-1].copy()
    gt = rng.standard_normal((n, t, 263)).astype(np.float32)
    gen = (gt + 0.7 * rng.standard_normal((n, t, 263))).astype(np.float32)
    m_lens = rng.integers(8, t + 1, n)
    mm = rng.standard_normal((16, 12, 16)).astype(np.float32)
    # a numpy that drew a different stream would make every comparison below meaningless
    np.testing.assert_array_equal(word[:2], ref["word_head"])
    np.testing.assert_array_equal(gen[:2, :4], ref["gen_head"])
    np.testing.assert_array_equal(m_lens, ref["m_lens"])
    np.testing.assert_array_equal(mm[:1], ref["mm_head"])
    as_t = torch.from_numpy
    return dict(word=as_t(word), pos=as_t(pos), cap=as_t(cap), gt=as_t(gt), gen=as_t(gen),
                m_lens=as_t(m_lens), mm=mm)  # fmt: skip


@pytest.fixture(scope="module")
def evaluator():
    return T2MEvaluator.from_reference_checkpoint(REF / "finest.tar")


# Noise floor: the same checkpoint run in float64 differs from our float32 run by at most
# 8.5e-7 (text) and 2.5e-6 (motion) on embeddings of magnitude ~3; ours vs the reference
# measured 0 (text) and 3.6e-7 (motion). 1e-5 is 4x the float32 floor.
ATOL = 1e-5


def test_reference_checkpoint_sizes_and_embeddings(evaluator, inputs, ref):
    assert evaluator.dim_word == 24 and evaluator.embed_dim == 16
    assert evaluator.text_encoder.gru.hidden_size == 32
    assert evaluator.motion_encoder.gru.hidden_size == 32 and not evaluator.training
    with torch.no_grad():
        text = evaluator.encode_text(inputs["word"], inputs["pos"], inputs["cap"])
        gt = evaluator.encode_motion(inputs["gt"], inputs["m_lens"])
        gen = evaluator.encode_motion(inputs["gen"], inputs["m_lens"])
    np.testing.assert_allclose(text.numpy(), ref["text_emb"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(gt.numpy(), ref["motion_emb_gt"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(gen.numpy(), ref["motion_emb_gen"], rtol=0, atol=ATOL)


def test_rows_come_back_in_the_callers_order(evaluator, inputs):
    # the reference needs captions sorted by length; we sort internally and undo it
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = evaluator.encode_text(inputs["word"][:40], inputs["pos"][:40], inputs["cap"][:40])
        shuffled = evaluator.encode_text(
            inputs["word"][perm], inputs["pos"][perm], inputs["cap"][perm]
        )
    # reordering the batch only changes float32 summation order (same floor as above)
    np.testing.assert_allclose(shuffled.numpy(), text[perm].numpy(), rtol=0, atol=ATOL)


def test_metrics_match_the_reference_code(ref):
    t, gt, gen = ref["text_emb"], ref["motion_emb_gt"], ref["motion_emb_gen"]
    # the same float32 formula and argsort: R-precision is a count, so it matches exactly
    np.testing.assert_array_equal(r_precision(t, gt), ref["r_precision_gt"])
    np.testing.assert_array_equal(r_precision(t, gen), ref["r_precision_gen"])
    # float32 traces summed in float64 vs the reference's float32 running sum: measured
    # difference 0 at 4.59; rtol 1e-6 is ~8 float32 ulps
    assert matching_score(t, gt) == pytest.approx(float(ref["matching_score_gt"]), rel=1e-6)
    assert matching_score(t, gen) == pytest.approx(float(ref["matching_score_gen"]), rel=1e-6)
    # identical float64 statistics and sqrtm: measured bit-equal
    assert frechet_distance(gt, gen) == pytest.approx(float(ref["fid"]), rel=1e-9)
    # RandomState(s) draws the pairs np.random.seed(s) drew in the reference: bit-equal
    assert diversity(gt, generator=123) == pytest.approx(float(ref["diversity_gt"]), rel=1e-6)
    assert diversity(gen, generator=124) == pytest.approx(float(ref["diversity_gen"]), rel=1e-6)


def test_multimodality_matches_the_reference(inputs, ref):
    assert multimodality(inputs["mm"], 10, generator=125) == pytest.approx(
        float(ref["multimodality"]), rel=1e-6
    )


def test_functional_and_accumulating_metrics_agree(ref):
    t, gt, gen = (torch.from_numpy(ref[k]) for k in ("text_emb", "motion_emb_gt", "motion_emb_gen"))
    want = t2m_metrics(t, gen, generator=0)
    assert set(want) == {"r_precision_top1", "r_precision_top2", "r_precision_top3",
                         "matching_score", "diversity"}  # fmt: skip
    metric = T2MMetrics(seed=0)
    for s in range(0, 128, 40):  # batches that do not line up with the 32-sample batches
        metric.update(t[s : s + 40], gen[s : s + 40], gt[s : s + 40])
    got = metric.compute()
    assert got.pop("fid") == pytest.approx(frechet_distance(gt, gen), rel=1e-9)
    assert got == pytest.approx(want, rel=1e-9)
    # FID of a set with itself is 0 up to sqrtm rounding (measured 1e-13 at D = 16)
    assert abs(frechet_distance(gt, gt)) < 1e-8


def test_metric_properties():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 8)).astype(np.float32)
    d = euclidean_distance_matrix(a, a)
    # the reference's expansion |a|^2 - 2ab + |b|^2 cancels to ~1e-3 on the diagonal in
    # float32 (measured max 9.8e-4); off-diagonal agrees with the direct norm to 1e-5
    assert np.all(np.diag(d) < 3e-3)
    direct = np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.testing.assert_allclose(d, direct, atol=3e-3)
    # a text embedded at its own motion is its own nearest neighbour
    assert r_precision(a, a).tolist() == [1.0, 1.0, 1.0]
    assert r_precision(a, a[::-1].copy())[0] < 0.1
    with pytest.raises(EvalError, match="batch of 32"):
        r_precision(a[:20], a[:20])
    with pytest.raises(EvalError, match="NaN"):
        t2m_metrics(np.full((32, 8), np.nan), a[:32])
    with pytest.raises(EvalError, match=r"R > 10"):
        multimodality(rng.standard_normal((4, 10, 8)))


def test_save_pretrained_round_trip(tmp_path, evaluator, inputs):
    evaluator.save_pretrained(tmp_path / "ev")
    assert {p.name for p in (tmp_path / "ev").iterdir()} >= {"config.json", "model.safetensors"}
    again = T2MEvaluator.from_pretrained(tmp_path / "ev").eval()
    with torch.no_grad():
        a = evaluator.encode_motion(inputs["gt"][:8], inputs["m_lens"][:8])
        b = again.encode_motion(inputs["gt"][:8], inputs["m_lens"][:8])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_inputs_name_the_field(tmp_path, evaluator, inputs):
    with pytest.raises(EvalError, match=r"motion: expected shape \('B', 'L', 263\)"):
        evaluator.encode_motion(inputs["gt"][..., :200], inputs["m_lens"])
    with pytest.raises(EvalError, match="m_lens: expected values in"):
        evaluator.encode_motion(inputs["gt"][:2], torch.tensor([2, 8]))
    bad = inputs["word"][:2].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(EvalError, match="word_emb contains NaN"):
        evaluator.encode_text(bad, inputs["pos"][:2], inputs["cap"][:2])
    with pytest.raises(EvalError, match="cap_lens"):
        evaluator.encode_text(inputs["word"][:2], inputs["pos"][:2], torch.tensor([13, 2]))
    with pytest.raises(EvalError, match="not found"):
        T2MEvaluator.from_reference_checkpoint(tmp_path / "missing.tar")
    torch.save({"text_encoder": {}}, tmp_path / "partial.tar")
    with pytest.raises(EvalError, match="expected keys"):
        T2MEvaluator.from_reference_checkpoint(tmp_path / "partial.tar")


def test_contrastive_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=g)
    same = contrastive_loss(x, x, generator=g)
    # pairwise_distance adds eps = 1e-6 per channel: d^2 = 4 * 1e-12 for identical rows
    assert same.loss_pos < 1e-10
    # the shift is never 0: pushing x apart from a shifted copy of itself always has a
    # positive hinge when all rows are equal
    ones = torch.ones(8, 4)
    for _ in range(20):
        assert contrastive_loss(ones, ones, generator=g).loss_neg == pytest.approx(100.0)
    far = contrastive_loss(x * 100, x * 100, generator=g)
    assert far.loss_neg < contrastive_loss(x, x, generator=g).loss_neg


def test_word_vectorizer(tmp_path):
    words = ["unk", "walk", "the", "left"]
    np.save(tmp_path / "our_vab_data.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(words))
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    wv = WordVectorizer(tmp_path)
    vec, pos = wv["walk/NOUN"]  # an Act_VIP word keeps its VIP category whatever the tag
    assert vec.tolist() == [3, 4, 5] and POS_CATEGORIES[int(pos.argmax())] == "Act_VIP"
    vec, pos = wv["the/DET"]
    assert vec.tolist() == [6, 7, 8] and POS_CATEGORIES[int(pos.argmax())] == "DET"
    vec, pos = wv["zebra/NOUN"]
    assert vec.tolist() == [0, 1, 2] and POS_CATEGORIES[int(pos.argmax())] == "OTHER"
    # a pickle that names a callable (how pickles run code) is refused, not executed
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({"walk": Path("x")}))
    with pytest.raises(EvalError, match="refusing to load"):
        WordVectorizer(tmp_path)


def test_full_training_checkpoint_loads_weights_only(tmp_path, evaluator):
    # Guo's trainer also stores its Adam states, epoch and iteration in finest.tar: plain
    # tensors, numbers and tuples that torch.load(weights_only=True) accepts
    ckpt = {k: getattr(evaluator, k).state_dict() for k in
            ("text_encoder", "movement_encoder", "motion_encoder")}  # fmt: skip
    for k in ("text_encoder", "motion_encoder"):
        opt = torch.optim.Adam(getattr(evaluator, k).parameters(), lr=1e-4)
        ckpt[f"opt_{k}"] = opt.state_dict()
    torch.save({**ckpt, "epoch": 3, "iter": 99}, tmp_path / "finest.tar")
    again = T2MEvaluator.from_reference_checkpoint(tmp_path / "finest.tar")
    for k, v in evaluator.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
