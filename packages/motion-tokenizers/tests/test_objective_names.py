"""The public tokenizer objective and LR schedule, and BEAT2 part names (old ones load)."""

import json
import shutil

import pytest
import torch
from torch.nn import functional as F

from motion_tokenizers import (
    BEAT2_PART_DIMS,
    RVQVAE,
    MultiPartTokenizer,
    TokenizerOutput,
    canonical_part_name,
    lr_factor,
    tokenizer_loss,
)
from motion_tokenizers.errors import CheckpointError


def _output(recon, commit=0.5):
    return TokenizerOutput(
        recon, torch.zeros(1, 1, 1, dtype=torch.long), torch.tensor(commit), torch.tensor(1.0)
    )


def test_tokenizer_loss_terms():
    target = torch.tensor([[[0.0], [1.0], [4.0]]])  # (B=1, T=3, C=1)
    pred = torch.tensor([[[0.0], [3.0], [4.0]]])  # one frame off by 2
    terms = tokenizer_loss(_output(pred), target)
    # smooth-L1 of |2| is 2 - 0.5 = 1.5, averaged over 3 values -> 0.5; + 0.02 x 0.5 commit
    assert terms.recon.item() == pytest.approx(0.5)
    assert terms.loss.item() == pytest.approx(0.51)
    assert terms.vel is None and terms.acc is None
    l2 = tokenizer_loss(
        _output(pred), target, recon="l2", commit_weight=1.0, vel_weight=2.0, acc_weight=3.0
    )
    vel = F.mse_loss(pred.diff(dim=1), target.diff(dim=1))  # diffs (3, 1) vs (1, 3) -> 4
    acc = F.mse_loss(pred.diff(n=2, dim=1), target.diff(n=2, dim=1))  # -2 vs 2 -> 16
    assert (l2.vel.item(), l2.acc.item()) == (vel.item(), acc.item()) == (4.0, 16.0)
    assert l2.loss.item() == pytest.approx(4 / 3 + 0.5 + 2 * 4 + 3 * 16)
    with pytest.raises(ValueError, match="recon_loss"):
        tokenizer_loss(_output(pred), target, recon="huber")


def test_tokenizer_loss_compares_in_the_target_dtype():
    target = torch.randn(2, 8, 3)
    terms = tokenizer_loss(_output(target.to(torch.bfloat16)), target)
    assert terms.recon.dtype == torch.float32  # a bf16-autocast reconstruction is upcast
    t64 = target.double()
    assert tokenizer_loss(_output(t64 + 1), t64).recon.dtype == torch.float64


def test_lr_factor_values():
    # warm-up over 4 steps, x 0.1 at steps 10 and 20
    got = [lr_factor(s, 4, (10, 20), 0.1) for s in (0, 1, 3, 9, 10, 19, 20)]
    assert got == pytest.approx([0.25, 0.5, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert lr_factor(0, 0, (), 0.5) == 1.0  # no warm-up, no milestones


# ----- part names ------------------------------------------------------------------------


def test_beat2_parts_are_gesture_data_names():
    assert list(BEAT2_PART_DIMS) == ["upper", "hands", "lower", "face"]
    assert canonical_part_name("lower_trans") == "lower" and canonical_part_name("body") == "body"
    assert RVQVAE.gesturelsm("lower_trans", width=8, nb_code=4, code_dim=4).input_dim == 57


def test_tokenizer_saved_under_lower_trans_loads_as_lower(tmp_path):
    torch.manual_seed(0)
    tok = MultiPartTokenizer.tiny({"upper": 78, "lower": 57}).eval()
    tok.save_pretrained(tmp_path / "new")
    # rewrite the folder the way earlier versions saved it: part "lower_trans"
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / "lower").rename(old / "lower_trans")
    config = json.loads((old / "config.json").read_text())
    config["parts"][1]["name"] = "lower_trans"
    (old / "config.json").write_text(json.dumps(config))

    loaded = MultiPartTokenizer.from_pretrained(old).eval()
    assert loaded.part_names == ["upper", "lower"]
    x = {"upper": torch.randn(1, 16, 78), "lower": torch.randn(1, 16, 57)}
    with torch.no_grad():
        assert torch.equal(loaded.encode_continuous(x), tok.encode_continuous(x))
    loaded.save_pretrained(tmp_path / "resaved")  # saved again: today's name
    assert (tmp_path / "resaved" / "lower").is_dir()

    config["parts"].append({"name": "lower", "class": "RVQVAE"})  # both names: one part twice
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: part 'lower' listed twice"):
        MultiPartTokenizer.from_pretrained(old)
