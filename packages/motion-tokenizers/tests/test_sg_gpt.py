"""Semantic Gesticulator's GPTs: parity with SG's own classes, generation, persistence, errors.

The reference outputs and checkpoints under data/sg_gpt_reference/ were recorded by running
SG's ``CrossCondGPT2_2part`` / ``Fine_GPT2_2part`` and the code path of its ``generate()`` from a
scratch checkout on CPU (its README.md says how); this file never imports the reference.
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from motion_tokenizers.errors import CheckpointError, TokenizerInputError
from motion_tokenizers.priors import (
    SGCoarseGPT,
    SGFineGPT,
    sg_fine_positions,
    sg_generate_codes,
    sg_regenerate_fine,
)
from motion_tokenizers.priors.semantic_gesticulator import _coarse_to_reference

DATA = Path(__file__).parent / "data" / "sg_gpt_reference"
# Float32 noise floor, measured on these models and inputs (1 and 2 threads alike): the
# reference's own float32 logits differ from a float64 run of the same weights by up to 1.0e-5
# (fine level 3; 3.3e-6 for the coarse GPT), ours from the recorded ones by at most 3.1e-6
# (logits up to 6.4 in magnitude). 3e-5 is 3x the largest float32 error and far below what a
# wrong weight, position or mask does (the weights are drawn with std 0.3, so any such slip
# moves logits by O(0.1) or more).
LOGIT_ATOL = 3e-5
# the recorded losses are means of the same logits: same floor
LOSS_ATOL = 3e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # every model here is tiny: a second thread only adds synchronisation on a shared box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref():
    data = np.load(DATA / "reference_outputs.npz")
    return {k: torch.from_numpy(data[k]) for k in data.files}


@pytest.fixture(scope="module")
def meta():
    return json.loads((DATA / "reference_meta.json").read_text())


@pytest.fixture(scope="module")
def coarse():
    return SGCoarseGPT.from_reference_checkpoint(DATA / "gpt0.pt")


@pytest.fixture(scope="module")
def fines():
    return [SGFineGPT.from_reference_checkpoint(DATA / f"gpt{k}.pt") for k in (1, 2, 3)]


# ----- reference checkpoints and parity -----------------------------------------------------


def test_reference_checkpoints_sizes_inferred(coarse, fines, meta):
    s = meta["sizes"]
    assert (coarse.vocab_size, coarse.n_embd, coarse.n_head) == (
        s["vocab"],
        s["n_embd"],
        s["n_head"],
    )
    assert (coarse.n_layer_base, coarse.n_layer_head, coarse.block_size) == (1, 1, 14)
    assert coarse.cond_dim == s["cond_dim"] and not coarse.training
    assert coarse.dropout == pytest.approx(0.1)  # from config.structure_gpt.base
    # the level comes from the embedding tables, not the config's layer_no
    assert [f.level for f in fines] == [1, 2, 3]
    assert all(f.block_size == 15 and f.n_layer == 1 and f.n_head == 2 for f in fines)


@pytest.mark.parametrize("T", [14, 5])
def test_coarse_logits_match_reference(coarse, ref, T):
    with torch.no_grad():
        lb, lh = coarse(
            ref[f"coarse_T{T}_body"], ref[f"coarse_T{T}_hands"], ref[f"coarse_T{T}_cond"]
        )
    assert lb.shape == (3, T, 16) and lh.shape == (3, T, 16)
    torch.testing.assert_close(lb, ref[f"coarse_T{T}_logits_body"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(lh, ref[f"coarse_T{T}_logits_hands"], atol=LOGIT_ATOL, rtol=0)


def test_coarse_loss_matches_reference(coarse, ref):
    # SG's teacher forcing: codes[:, :-1] in, codes[:, 1:] out, audio rows 1.. as condition
    with torch.no_grad():
        loss, stats = coarse.loss(ref["loss_body"], ref["loss_hands"], ref["loss_cond"])
    assert float(loss) == pytest.approx(float(ref["loss_value"]), abs=LOSS_ATOL)
    assert stats["ce_body"] + stats["ce_hands"] == pytest.approx(float(loss), abs=1e-6)


@pytest.mark.parametrize("shift", [None, 4])
def test_sampling_replays_reference(coarse, ref, shift):
    # the reference drew with torch.manual_seed(123) and torch's global generator: 40 steps, so
    # the context slides 27 times past block_size - 1 = 13 tokens. Exact tokens are a fair ask:
    # along these samples the smallest gap between two of the six most probable tokens is
    # 1.3e-5 in probability (measured), over 10x what the float32 noise above can move it
    name = "" if shift is None else f"_shift{shift}"
    want_b, want_h = ref[f"sample{name}_body"], ref[f"sample{name}_hands"]
    body0, hands0 = torch.full((1, 1), 3), torch.full((1, 1), 7)
    torch.manual_seed(123)
    b, h = coarse.sample(body0, hands0, ref["sample_cond"], shift=shift)
    assert b.shape == (1, 41) == want_b.shape
    assert torch.equal(b, want_b) and torch.equal(h, want_h)
    # an explicit generator in the same state replays the same stream
    g = torch.Generator().manual_seed(123)
    b2, h2 = coarse.sample(body0, hands0, ref["sample_cond"], shift=shift, generator=g)
    assert torch.equal(b2, want_b) and torch.equal(h2, want_h)
    # and the draws really matter: another seed gives other tokens
    g.manual_seed(124)
    b3, _ = coarse.sample(body0, hands0, ref["sample_cond"], shift=shift, generator=g)
    assert not torch.equal(b3, want_b)


def test_batched_sampling_equals_rows_alone(coarse):
    # top_probs=(1,) makes each step the most probable token (the reference only samples batch
    # 1; here every row must be what it would be alone, through the sliding context too)
    cond = torch.randn(2, 30, 48, generator=torch.Generator().manual_seed(3))
    b0, h0 = torch.tensor([[1], [2]]), torch.tensor([[3], [4]])
    b, h = coarse.sample(b0, h0, cond, top_probs=(1.0,))
    assert b.shape == h.shape == (2, 31)
    for i in range(2):
        bi, hi = coarse.sample(b0[i : i + 1], h0[i : i + 1], cond[i : i + 1], top_probs=(1.0,))
        assert torch.equal(bi, b[i : i + 1]) and torch.equal(hi, h[i : i + 1])
    with torch.no_grad():  # step 1 is the arg-max of the forward pass on the first token
        lb, lh = coarse(b0, h0, cond[:, :1])
    assert torch.equal(b[:, 1], lb[:, 0].argmax(-1)) and torch.equal(h[:, 1], lh[:, 0].argmax(-1))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_fine_logits_match_reference(fines, ref, level):
    fine = fines[level - 1]
    below_b = ref["fine_below_body"][..., :level]
    below_h = ref["fine_below_hands"][..., :level]
    with torch.no_grad():
        lb, lh = fine(below_b, below_h, ref["fine_cond"])
    torch.testing.assert_close(lb, ref[f"fine{level}_logits_body"], atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(lh, ref[f"fine{level}_logits_hands"], atol=LOGIT_ATOL, rtol=0)
    # the reference's own output is the top-1 token per position
    pb, ph = fine.predict(below_b, below_h, ref["fine_cond"])
    assert torch.equal(pb, ref[f"fine{level}_top1_body"])
    assert torch.equal(ph, ref[f"fine{level}_top1_hands"])
    body = torch.cat([below_b, ref["fine_target_body"][..., None]], -1)
    hands = torch.cat([below_h, ref["fine_target_hands"][..., None]], -1)
    with torch.no_grad():
        loss, _ = fine.loss(body, hands, ref["fine_cond"])
    assert float(loss) == pytest.approx(float(ref[f"fine{level}_loss"]), abs=LOSS_ATOL)


def test_generate_codes_match_reference(coarse, fines, ref):
    # tokens exact: the fine GPTs' smallest top-1 / top-2 probability gap on this path is 3.8e-5
    # generate(): 40 audio rows -> 40 tokens of 4 layers; the reference ran under
    # torch.manual_seed(77) with init codes 5 (body) and 9 (hands)
    torch.manual_seed(77)
    codes = sg_generate_codes(coarse, fines, ref["gen_audio"], body0=5, hands0=9)
    want_b = ref["gen_body"][:, 0].T[None]  # (4, 1, N) -> (1, N, 4)
    want_h = ref["gen_hands"][:, 0].T[None]
    assert codes["body"].shape == (1, 40, 4)
    assert torch.equal(codes["body"], want_b) and torch.equal(codes["hands"], want_h)


def test_sg_size_parameter_counts_match_reference(meta):
    # SG's released sizes, built on the meta device (no memory), against the reference classes'
    # counts at the same configs (recorded): coarse 86,997,504; fine 44,472,576 / 45,259,008 /
    # 46,045,440
    counts = meta["sg_param_counts"]
    with torch.device("meta"):
        assert sum(p.numel() for p in SGCoarseGPT.sg().parameters()) == counts["coarse"]
        for level in (1, 2, 3):
            n = sum(p.numel() for p in SGFineGPT.sg(level).parameters())
            assert n == counts[f"fine{level}"], level


# ----- regeneration after an edit of layer 0 ------------------------------------------------


def test_regenerate_fine_only_touches_the_dependent_positions(fines, ref):
    codes = {"body": ref["gen_body"][:, 0].T[None], "hands": ref["gen_hands"][:, 0].T[None]}
    cond = ref["gen_audio"]
    # the whole fine stage recomputed from the reference's layer 0 is the reference's result
    full = sg_regenerate_fine(fines, codes, cond, positions=slice(None))
    assert torch.equal(full["body"], codes["body"]) and torch.equal(full["hands"], codes["hands"])
    g = torch.Generator().manual_seed(5)
    for start, end in ((22, 25), (3, 6)):  # past the first window, and inside it
        edited = {k: v.clone() for k, v in codes.items()}
        for part in edited:
            edited[part][0, start:end, 0] = torch.randint(0, 16, (end - start,), generator=g)
        pos = sg_fine_positions(start, end, 40)
        out = sg_regenerate_fine(fines, edited, cond, positions=pos)
        whole = sg_regenerate_fine(fines, edited, cond, positions=slice(None))
        outside = torch.ones(40, dtype=torch.bool)
        outside[pos] = False
        for part in ("body", "hands"):
            # inside: what the full fine stage gives for this layer 0
            assert torch.equal(out[part][0, pos], whole[part][0, pos])
            # outside: untouched, and the full stage agrees (nothing there depends on the edit)
            assert torch.equal(out[part][0, outside], edited[part][0, outside])
            assert torch.equal(whole[part][0, outside], codes[part][0, outside])
        # the edit did change some fine codes (else this test could not fail)
        assert not torch.equal(out["body"][0, pos, 1:], codes["body"][0, pos, 1:])
    assert sg_fine_positions(22, 25, 40).tolist() == list(range(22, 39))
    assert sg_fine_positions(3, 6, 40).tolist() == list(range(0, 20))


def test_short_sequence_is_one_window(coarse, fines):
    # 9 tokens (the reference crashes below 16): one window of 9, every position from it
    cond = torch.randn(1, 9, 48, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    codes = sg_generate_codes(coarse, fines, cond, body0=1, hands0=2, generator=g)
    assert codes["body"].shape == (1, 9, 4) == codes["hands"].shape
    again = sg_regenerate_fine(fines, codes, cond, positions=slice(None))
    assert torch.equal(again["body"], codes["body"])


# ----- training, persistence ----------------------------------------------------------------


@pytest.fixture(scope="module")
def overfit():
    """Loss before/after 60 AdamW steps on one fixed batch (tiny sizes, dropout off)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    B, T = 8, 15
    body = torch.randint(0, 16, (B, T, 4), generator=g)
    hands = torch.randint(0, 16, (B, T, 4), generator=g)
    cond = torch.randn(B, T, 24, generator=g)
    models = {
        "coarse": (SGCoarseGPT.tiny(dropout=0.0), (body[..., 0], hands[..., 0], cond)),
        "fine2": (SGFineGPT.tiny(level=2, dropout=0.0), (body[..., :3], hands[..., :3], cond)),
    }
    out = {}
    for name, (model, batch) in models.items():
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(60):
            loss, _ = model.loss(*batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        out[name] = losses
    return out


@pytest.mark.parametrize("name", ["coarse", "fine2"])
def test_tiny_overfit_loss_decreases(overfit, name):
    losses = overfit[name]
    # starts near 2 * ln(16) = 5.55 (two uniform 16-way heads); measured after 60 steps:
    # coarse 5.55 -> 0.16, fine level 2 5.54 -> 0.28. Asserting a drop below a third of the
    # start leaves wide room for thread / platform differences yet fails for a model that
    # does not learn.
    assert losses[0] == pytest.approx(2 * np.log(16), abs=0.3)
    assert losses[-1] < losses[0] / 3


def test_save_pretrained_round_trip(coarse, fines, tmp_path, ref):
    coarse.save_pretrained(tmp_path / "coarse")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "coarse").iterdir()}
    back = SGCoarseGPT.from_pretrained(tmp_path / "coarse")
    args = (ref["coarse_T14_body"], ref["coarse_T14_hands"], ref["coarse_T14_cond"])
    with torch.no_grad():
        assert torch.equal(back(*args)[0], coarse(*args)[0])
    fines[2].save_pretrained(tmp_path / "fine3")
    back3 = SGFineGPT.from_pretrained(tmp_path / "fine3")
    assert back3.level == 3
    a = (ref["fine_below_body"], ref["fine_below_hands"], ref["fine_cond"])
    with torch.no_grad():
        assert torch.equal(back3(*a)[1], fines[2](*a)[1])
    with pytest.raises(CheckpointError, match="not found"):
        SGCoarseGPT.from_pretrained(tmp_path / "missing")


# ----- bad input ----------------------------------------------------------------------------


def test_bad_input_names_the_field(coarse, fines):
    tok = torch.zeros(1, 5, dtype=torch.long)
    cond = torch.zeros(1, 5, 48)
    with pytest.raises(TokenizerInputError, match=r"body: tokens must lie in \[0, 16\)"):
        coarse(tok + 16, tok, cond)
    with pytest.raises(TokenizerInputError, match="hands: expected an int64"):
        coarse(tok, tok.float(), cond)
    with pytest.raises(TokenizerInputError, match="cond: expected width cond_dim=48"):
        coarse(tok, tok, torch.zeros(1, 5, 437))
    with pytest.raises(TokenizerInputError, match="cond: holds NaN"):
        coarse(tok, tok, torch.full((1, 5, 48), float("nan")))
    with pytest.raises(TokenizerInputError, match="cond: 4 steps, expected 5"):
        coarse(tok, tok, cond[:, :4])
    long = torch.zeros(1, 15, dtype=torch.long)  # the reference asserts T <= block_size = 14
    with pytest.raises(TokenizerInputError, match="body: T=15, at most 14"):
        coarse(long, long, torch.zeros(1, 15, 48))
    with pytest.raises(TokenizerInputError, match=r"body0, hands0: expected \(B, 1\)"):
        coarse.sample(tok, tok, cond)
    below = torch.zeros(1, 16, 2, dtype=torch.long)  # fine position table: 15 rows
    with pytest.raises(TokenizerInputError, match="body_below: T=16"):
        fines[1](below, below, torch.zeros(1, 16, 48))
    with pytest.raises(TokenizerInputError, match=r"expected \(B, T, 2\) each \(level=2\)"):
        fines[1](below[:, :5, :1], below[:, :5, :1], cond)
    with pytest.raises(TokenizerInputError, match=r"fines: expected levels 1\.\.2 in order"):
        sg_generate_codes(coarse, [fines[1], fines[0]], torch.zeros(1, 20, 48))
    codes = {"body": torch.zeros(1, 20, 4, dtype=torch.long)}
    with pytest.raises(TokenizerInputError, match="codes: expected a dict with keys"):
        sg_regenerate_fine(fines, codes, torch.zeros(1, 20, 48), positions=slice(None))
    codes["hands"] = codes["body"].clone()
    with pytest.raises(TokenizerInputError, match=r"positions: expected values in \[0, 20\)"):
        sg_regenerate_fine(fines, codes, torch.zeros(1, 20, 48), positions=torch.tensor([25]))
    with pytest.raises(TokenizerInputError, match=r"level: expected 1\.\.3"):
        SGFineGPT.tiny(level=4)


class _Evil:
    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


def test_bad_checkpoints(tmp_path, coarse):
    with pytest.raises(CheckpointError, match="file not found"):
        SGCoarseGPT.from_reference_checkpoint(tmp_path / "gpt0.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((DATA / "gpt1.pt").read_bytes()[:4000])
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: not a loadable SG checkpoint"):
        SGFineGPT.from_reference_checkpoint(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": _Evil()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match=r"builtins\.print is not allowed"):
        SGCoarseGPT.from_reference_checkpoint(evil)
    # SG's key layout, rebuilt from the loaded model
    state = {"module." + _coarse_to_reference(k): v for k, v in coarse.state_dict().items()}
    del state["module.gpt_head.head_hands.weight"]
    torch.save({"model": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="no usable 'n_head'"):
        SGCoarseGPT.from_reference_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['gpt_head.head_hands.weight'\]"):
        SGCoarseGPT.from_reference_checkpoint(tmp_path / "partial.pt", n_head=2)
