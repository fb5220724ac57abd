"""T2MGPT: parity with T2M-GPT's Text2Motion_Transformer, sampling, loss, persistence, errors.

The reference outputs under data/t2m_gpt_reference/ were recorded from T2M-GPT's own code (its
README.md says how); this file never imports the reference.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motion_tokenizers.errors import CheckpointError, TokenizerInputError
from motion_tokenizers.priors import T2MGPT, KVCache, corrupt_codes, pad_codes

DATA = Path(__file__).parent / "data" / "t2m_gpt_reference"
CKPT = DATA / "reference_trans.pth"
# Float32 noise floor (reference_meta.json): the reference's own logits move by up to 1.3e-6
# between two prefix lengths of the same inputs and 8.4e-7 between batch compositions; ours
# differ from the recorded ones by at most 1.7e-6, and our KV-cache path from our full forward by
# at most 2.4e-6 (1 and 2 threads; logits up to 5.5 in magnitude). 1e-5 is ~4x the largest
# measured gap and far below a real difference (a wrong weight or position moves logits by
# O(0.1)).
LOGIT_ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def ref():
    return np.load(DATA / "reference_outputs.npz")


@pytest.fixture(scope="module")
def model():
    return T2MGPT.from_reference_checkpoint(CKPT, n_head=4)


def test_reference_checkpoint_sizes_inferred(model):
    meta = json.loads((DATA / "reference_meta.json").read_text())
    cfg = meta["config"]
    for key in ("num_vq", "embed_dim", "clip_dim", "block_size", "num_layers", "fc_rate"):
        assert getattr(model, key) == cfg[key], key
    assert len(model.blocks) == 2 * cfg["num_layers"]  # num_layers blocks in each half
    assert (model.end_id, model.pad_id) == (32, 33)
    assert not model.training


def test_reference_logits(model, ref):
    cond = torch.from_numpy(ref["cond_logits"])
    with torch.no_grad():
        for name, idx in (("full", ref["idx_full"]), ("mid", ref["idx_mid"])):
            out = model(torch.from_numpy(idx), cond)
            assert out.shape == (4, idx.shape[1] + 1, 33)
            np.testing.assert_allclose(out.numpy(), ref[f"logits_{name}"], rtol=0, atol=LOGIT_ATOL)
        empty = model(torch.zeros(4, 0, dtype=torch.long), cond)  # T = 0: the condition only
    np.testing.assert_allclose(empty.numpy(), ref["logits_empty"], rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("batch", ["a", "b"])
def test_reference_greedy_samples(model, ref, batch, use_cache):
    cond = torch.from_numpy(ref[f"cond_{batch}"])
    codes, lengths = model.sample(cond, reference=True, use_cache=use_cache)
    assert torch.equal(codes, torch.from_numpy(ref[f"ref_{batch}"]))
    assert lengths.tolist() == [codes.shape[1]] * len(cond)
    # per-sequence stop: each row equals the reference sampling that row alone
    single = torch.from_numpy(ref[f"single_{batch}"])
    want_len = (single >= 0).sum(1)
    codes, lengths = model.sample(cond, use_cache=use_cache)
    assert torch.equal(lengths, want_len)
    want = torch.where(single >= 0, single, model.pad_id)[:, : codes.shape[1]]
    assert torch.equal(codes, want)


def test_reference_batches_tell_the_stop_rules_apart(ref):
    # batch A: row 0 ends after 4 codes, the others after 1, 10 and 11: only row 0's End
    # stops the reference; batch B: row 0 runs to block_size, whose last code is dropped
    assert ref["ref_a"].shape == (4, 4)
    assert (ref["single_a"] >= 0).sum(1).tolist() == [4, 1, 10, 11]
    assert ref["ref_b"].shape == (3, 11)
    assert ref["ref_a"][1, 1] == 32  # row 1 ended after 1 code; its End stays in the batch


def test_reference_loader_layouts(tmp_path, model, ref):
    state = torch.load(CKPT, weights_only=True)["trans"]
    cond = torch.from_numpy(ref["cond_logits"])
    idx = torch.from_numpy(ref["idx_full"])
    want = model(idx, cond)
    for name, obj in (
        ("bare.pth", state),
        ("ddp.pth", {"trans": {f"module.{k}": v for k, v in state.items()}}),
    ):
        torch.save(obj, tmp_path / name)
        other = T2MGPT.from_reference_checkpoint(tmp_path / name, n_head=4)
        assert torch.equal(other(idx, cond), want)


def test_reference_loader_errors(tmp_path):
    state = torch.load(CKPT, weights_only=True)["trans"]
    with pytest.raises(CheckpointError, match="file not found"):
        T2MGPT.from_reference_checkpoint(tmp_path / "none.pth", n_head=4)
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        T2MGPT.from_reference_checkpoint(tmp_path / "junk.pth", n_head=4)
    cases = {
        "missing.pth": (
            {k: v for k, v in state.items() if k != "trans_head.ln_f.bias"},
            "trans_head.ln_f.bias",
        ),
        "extra.pth": ({**state, "trans_head.extra.weight": torch.zeros(2)}, "trans_head.extra"),
        "shape.pth": (
            {**state, "trans_base.blocks.1.attn.key.weight": torch.zeros(32, 31)},
            "trans_base.blocks.1.attn.key.weight",
        ),
        "nan.pth": (
            {**state, "trans_head.head.weight": state["trans_head.head.weight"] * float("nan")},
            "trans_head.head.weight",
        ),
        "halves.pth": (
            {k: v for k, v in state.items() if not k.startswith("trans_head.blocks.1.")},
            "trans_head blocks",
        ),
    }
    for name, (bad, key) in cases.items():
        torch.save({"trans": bad}, tmp_path / name)
        with pytest.raises(CheckpointError) as err:
            T2MGPT.from_reference_checkpoint(tmp_path / name, n_head=4)
        assert name in str(err.value) and key in str(err.value), str(err.value)
    with pytest.raises(CheckpointError, match="n_head"):  # 32 channels do not split in 5 heads
        T2MGPT.from_reference_checkpoint(CKPT, n_head=5)


def test_readme_size_parameter_count():
    # the reference's own class at the README size, counted on the meta device by the
    # recording script, minus the two position tables T2MGPT does not store
    meta = json.loads((DATA / "reference_meta.json").read_text())
    ref_count = meta["readme_total_parameters"]
    unused = meta["readme_pos_embedding_unused"] + meta["readme_pos_embed_fixed_table"]
    with torch.device("meta"):
        big = T2MGPT.t2m_gpt()
    assert sum(p.numel() for p in big.parameters()) == ref_count - unused == 228_311_040
    assert len(big.blocks) == 18


def test_kv_cache_step_logits_match_full_forward(model, ref):
    # the cached path runs one position at a time; the full forward runs the whole prefix.
    # Measured gap 2.4e-6 (1 thread) / 1.9e-6 (2 threads): LOGIT_ATOL above.
    cond = torch.from_numpy(ref["cond_logits"])
    idx = torch.from_numpy(ref["idx_full"])
    with torch.no_grad():
        full = model(idx, cond)
        cache = KVCache(len(model.blocks), 4, model.n_head, model.block_size, 8)
        steps = [model._step(model.cond_emb(cond)[:, None], cache)]
        for t in range(idx.shape[1]):
            steps.append(model._step(model.tok_emb(idx[:, t : t + 1]), cache))
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=LOGIT_ATOL)


def test_categorical_sampling(model, ref):
    cond = torch.from_numpy(ref["cond_a"]).repeat(8, 1)  # 32 rows

    def draw(seed, **kw):
        return model.sample(cond, greedy=False, generator=torch.Generator().manual_seed(seed), **kw)

    a, la = draw(0)
    b, lb = draw(0, use_cache=False)  # the same draws in the same order
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, _ = draw(1)
    assert not torch.equal(a, c)
    # top_k=1 keeps only the arg-max: categorical sampling collapses to greedy
    g, lg = model.sample(cond)
    k1, lk1 = draw(2, top_k=1, temperature=0.7)
    assert torch.equal(g, k1) and torch.equal(lg, lk1)
    for row, n in zip(a, la, strict=True):  # codes before the length, Pad after it
        assert (row[:n] < model.end_id).all() and (row[n:] == model.pad_id).all()
    short, ls = draw(3, max_tokens=3)
    assert short.shape[1] <= 3 and int(ls.max()) <= 3


def test_pad_codes_layout():
    codes, lengths = pad_codes(
        [torch.tensor([3, 1, 4]), torch.tensor([], dtype=torch.long), torch.arange(5)],
        end_id=8,
        pad_id=9,
        length=6,
    )
    assert lengths.tolist() == [3, 0, 5]
    assert codes.tolist() == [[3, 1, 4, 8, 9, 9], [8, 9, 9, 9, 9, 9], [0, 1, 2, 3, 4, 8]]
    with pytest.raises(TokenizerInputError, match=r"sequences\[0\]: 6 codes"):
        pad_codes([torch.arange(6)], end_id=8, pad_id=9, length=6)
    with pytest.raises(TokenizerInputError, match=r"sequences\[1\]: codes must lie in \[0, 8\)"):
        pad_codes([torch.arange(2), torch.tensor([8])], end_id=8, pad_id=9, length=6)


def test_corruption_rate_within_binomial_error():
    n, num_vq, pkeep = 200_000, 512, 0.5
    codes = torch.cat([torch.randint(0, num_vq, (n - 2000,)), torch.full((2000,), num_vq + 1)])
    codes = codes.view(400, 500)
    out = corrupt_codes(
        codes, pkeep=pkeep, num_vq=num_vq, generator=torch.Generator().manual_seed(0)
    )
    again = corrupt_codes(
        codes, pkeep=pkeep, num_vq=num_vq, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)
    changed = out != codes
    assert (out[changed] < num_vq).all()  # replacements are motion codes, never End/Pad
    # a code is changed when it is dropped (1 - pkeep) and the random code differs from it
    # (1 - 1/num_vq); Pad entries always differ when dropped
    p_code = (1 - pkeep) * (1 - 1 / num_vq)
    expected = (p_code * (n - 2000) + (1 - pkeep) * 2000) / n
    sigma = math.sqrt(expected * (1 - expected) / n)
    rate = changed.float().mean().item()
    assert abs(rate - expected) < 4 * sigma, (rate, expected, sigma)
    assert torch.equal(corrupt_codes(codes, pkeep=1.0, num_vq=num_vq), codes)


def _reference_style_ce(model, inputs, codes, lengths, cond):
    # train_t2m_trans.py: loss += CE(pred[i][:len+1], target[i][:len+1]) / bs, row by row
    pred = model(inputs, cond)
    total = 0.0
    for i in range(len(codes)):
        n = int(lengths[i]) + 1
        total = total + F.cross_entropy(pred[i, :n], codes[i, :n]) / len(codes)
    return total


def test_loss_is_the_reference_average():
    torch.manual_seed(0)
    m = T2MGPT.tiny(drop_out_rate=0.0).eval()
    seqs = [torch.randint(0, 64, (n,)) for n in (0, 3, 9, 15)]
    codes, lengths = pad_codes(seqs, end_id=m.end_id, pad_id=m.pad_id, length=16)
    cond = torch.randn(4, 16)
    loss, stats = m.loss(codes, lengths, cond, pkeep=1.0)
    want = _reference_style_ce(m, codes[:, :-1], codes, lengths, cond)
    # the same float32 sums in a different order: measured gap at most 4.8e-7 (1 ulp of a
    # loss of ~4.1) over 20 seeds at 1 and 2 threads; 2e-6 is 4 ulps
    torch.testing.assert_close(loss, want, rtol=0, atol=2e-6)
    assert stats["ce"] == pytest.approx(loss.item()) and 0.0 <= stats["acc"] <= 1.0
    loss_a, _ = m.loss(codes, lengths, cond, generator=torch.Generator().manual_seed(5))
    inputs = corrupt_codes(
        codes[:, :-1], pkeep=0.5, num_vq=64, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(
        loss_a, _reference_style_ce(m, inputs, codes, lengths, cond), rtol=0, atol=2e-6
    )


def test_bad_input_errors():
    m = T2MGPT.tiny()
    cond = torch.randn(2, 16)
    idx = torch.zeros(2, 3, dtype=torch.long)
    cases = [
        (lambda: m(idx, torch.randn(2, 15)), "cond: expected a float tensor \\(B, clip_dim=16\\)"),
        (lambda: m(idx, cond * float("nan")), "cond: holds NaN"),
        (lambda: m(idx.float(), cond), "indices: expected an int64 tensor"),
        (lambda: m(idx[:1], cond), "indices: batch 1 does not match cond's batch 2"),
        (lambda: m(torch.zeros(2, 16, dtype=torch.long), cond), "T=16, at most"),
        (lambda: m(idx + 66, cond), "ids must lie in \\[0, 65\\]"),
        (lambda: m.sample(cond, max_tokens=16), "max_tokens: expected 1..block_size - 1 = 15"),
        (lambda: m.sample(cond, reference=True, max_tokens=3), "max_tokens"),
        (lambda: m.sample(cond, greedy=False, temperature=0.0), "temperature"),
        (lambda: m.sample(cond, greedy=False, top_k=0), "top_k"),
        (lambda: T2MGPT.tiny(embed_dim=30), "embed_dim"),
    ]
    codes, lengths = pad_codes([torch.arange(3)] * 2, end_id=64, pad_id=65, length=8)
    cases += [
        (lambda: m.loss(codes, lengths + 1, cond), "codes\\[0\\]: expected End \\(64\\)"),
        (lambda: m.loss(codes, lengths + 5, cond), "lengths: expected values in \\[0, 7\\]"),
        (lambda: m.loss(codes, lengths, cond, pkeep=1.5), "pkeep"),
        (lambda: m.loss(codes, lengths[:1], cond), "lengths: expected an int tensor \\(2,\\)"),
    ]
    for fn, msg in cases:
        with pytest.raises(TokenizerInputError, match=msg):
            fn()


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    m = T2MGPT.tiny().eval()
    m.save_pretrained(tmp_path / "prior")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "prior").iterdir()}
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["num_vq"] == 64
    back = T2MGPT.from_pretrained(tmp_path / "prior")
    cond, idx = torch.randn(3, 16), torch.randint(0, 66, (3, 7))
    assert torch.equal(back(idx, cond), m(idx, cond))
    with pytest.raises(CheckpointError, match="nothing: checkpoint folder not found"):
        T2MGPT.from_pretrained(tmp_path / "nothing")
    (tmp_path / "prior" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        T2MGPT.from_pretrained(tmp_path / "prior")


@pytest.fixture(scope="module")
def overfit():
    """A tiny prior trained on four code sequences for 80 steps (no corruption)."""
    torch.manual_seed(0)
    m = T2MGPT.tiny(drop_out_rate=0.0)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 64, (n,), generator=g) for n in (4, 7, 10, 15)]
    codes, lengths = pad_codes(seqs, end_id=m.end_id, pad_id=m.pad_id, length=16)
    cond = torch.randn(4, 16, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.5, 0.9), weight_decay=1e-6)
    history = []
    for _ in range(80):
        loss, stats = m.loss(codes, lengths, cond, pkeep=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(stats)
    return m.eval(), codes, lengths, cond, history


def test_overfit_loss_falls_and_greedy_reproduces(overfit):
    m, codes, lengths, cond, history = overfit
    # measured: ce 4.16 (ln 65 = 4.17, a uniform guess) at step 0, 0.067 after 80 steps,
    # accuracy 1.0 from step 38 on; the bounds leave ~4x room on the final ce
    assert history[0]["ce"] > 3.5
    assert history[-1]["ce"] < 0.3 and history[-1]["acc"] == 1.0
    assert all(h["acc"] == 1.0 for h in history[60:])
    out, out_len = m.sample(cond)
    assert torch.equal(out_len, lengths)
    assert torch.equal(out, torch.where(codes == m.end_id, m.pad_id, codes)[:, : out.shape[1]])


def test_end_as_first_token():
    # the reference raises here (its token list is never bound); both stop rules give no codes
    m = T2MGPT.tiny().eval()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.weight[m.end_id] = 1.0
        m.ln_f.bias.fill_(1.0)  # End's logit = sum(ln_f(x)) > 0 = every other logit
    cond = torch.randn(3, 16)
    for reference in (True, False):
        codes, lengths = m.sample(cond, reference=reference)
        assert codes.shape == (3, 0) and lengths.tolist() == [0, 0, 0]
