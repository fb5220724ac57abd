"""ConditionSchedule: keep frequencies, stage boundaries, exact resume, validation."""

import json
import math

import pytest
import torch

import flow_backbones as fb
from flow_backbones import ConditionSchedule, ConditionStage

# Frequency checks compare an empirical keep rate p_hat over n Bernoulli draws with the ratio p
# and allow 5 binomial standard errors, sqrt(p (1 - p) / n): for a correct sampler the chance
# of a false alarm is below 6e-7 per check (two-sided normal tail at 5 sigma), while a wrong
# ratio (0.5 for 0.25, or per-batch draws where per-sample ones are wanted) misses by far more.
SIGMAS = 5.0


def assert_rate(kept: torch.Tensor, p: float, what: str) -> None:
    n = kept.numel()
    p_hat = kept.double().mean().item()
    bound = SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(p_hat - p) < bound, f"{what}: p_hat={p_hat:.4f}, p={p}, n={n}, bound={bound:.4f}"


def masks(schedule, steps, batch):
    """{condition: (len(steps), batch) bool} over the given steps."""
    draws = [schedule.sample(s, batch) for s in steps]
    return {c: torch.stack([d[c] for d in draws]) for c in schedule.conditions}


def test_omnihuman_table_and_stage_boundaries():
    s = ConditionSchedule.omnihuman()
    assert s.conditions == ("audio", "pose", "reference", "text")
    assert [st.name for st in s.stages] == ["stage1", "stage2", "stage3"]
    assert [st.steps for st in s.stages] == [50_000, 30_000, 20_000]
    assert s.total_steps == 100_000
    table = [dict(st.keep) for st in s.stages]
    assert table == [
        {"text": 1.0, "reference": 1.0, "audio": 0.0, "pose": 0.0},
        {"text": 1.0, "reference": 1.0, "audio": 0.5, "pose": 0.0},
        {"text": 1.0, "reference": 1.0, "audio": 0.25, "pose": 0.13},
    ]
    for step, index in [(0, 0), (49_999, 0), (50_000, 1), (79_999, 1), (80_000, 2)]:
        assert s.stage_at(step) == (index, s.stages[index])
    # past the end: the last stage
    assert s.stage_at(99_999)[0] == 2 and s.stage_at(10**7)[0] == 2
    assert [s.stage_start(i) for i in range(3)] == [0, 50_000, 80_000]


def test_keep_frequencies_match_the_ratios_per_sample():
    s = ConditionSchedule.omnihuman(steps=(5, 300, 300), seed=3)
    # stage 1: ratio 0 never keeps, ratio 1 always keeps (exact, not statistical)
    m1 = masks(s, range(5), 64)
    assert not m1["audio"].any() and not m1["pose"].any()
    assert m1["text"].all() and m1["reference"].all()
    m2 = masks(s, range(5, 305), 64)
    assert_rate(m2["audio"], 0.5, "stage2 audio")
    assert not m2["pose"].any()
    m3 = masks(s, range(305, 605), 64)
    assert_rate(m3["audio"], 0.25, "stage3 audio")
    assert_rate(m3["pose"], 0.13, "stage3 pose")
    assert m3["text"].all() and m3["reference"].all()
    # conditions are drawn independently: the joint rate is the product of the ratios
    assert_rate(m3["audio"] & m3["pose"], 0.25 * 0.13, "stage3 audio and pose")
    # rows are drawn independently: with B = 64 and p = 0.5 a batch whose rows all agree has
    # probability 2**-63 per step, so any such batch means per-batch draws leaked in
    rows_agree = (m2["audio"].all(dim=1) | ~m2["audio"].any(dim=1)).sum().item()
    assert rows_agree == 0
    # and steps differ from each other (identical masks at two steps: 2**-64 per pair)
    assert len({tuple(r.tolist()) for r in m2["audio"]}) == 300


def test_per_batch_keeps_or_drops_whole_batches():
    s = ConditionSchedule.omnihuman(steps=(1, 2000, 2000), per="batch", seed=1)
    m = masks(s, range(1, 2001), 16)
    a = m["audio"]
    assert torch.equal(a, a[:, :1].expand_as(a))  # one decision per batch
    assert_rate(a[:, 0], 0.5, "per-batch stage2 audio")
    m3 = masks(s, range(2001, 4001), 4)
    for c, p in [("audio", 0.25), ("pose", 0.13)]:
        assert torch.equal(m3[c], m3[c][:, :1].expand_as(m3[c]))
        assert_rate(m3[c][:, 0], p, f"per-batch stage3 {c}")


def test_masks_are_a_pure_function_of_seed_step_and_batch_size():
    a = ConditionSchedule.omnihuman(steps=(10, 20, 30), seed=7)
    steps = list(range(0, 70, 3))
    run = [a.sample(s, 12) for s in steps]
    # a fresh instance rebuilt from JSON (a resumed run), asked in another order, with the
    # global RNG reseeded in between, draws the same masks
    b = ConditionSchedule.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b == a
    for i in reversed(range(len(steps))):
        torch.manual_seed(1000 + i)
        got = b.sample(steps[i], 12)
        assert got.keys() == run[i].keys()
        for c in got:
            assert got[c].dtype == torch.bool and got[c].shape == (12,)
            assert torch.equal(got[c], run[i][c])
    # sampling does not consume the global RNG
    state = torch.get_rng_state()
    a.sample(40, 12)
    assert torch.equal(torch.get_rng_state(), state)
    # another seed draws other masks (stage 3: audio 0.25 over 8 steps x 12 rows; equal masks
    # would need 96 equal coin flips)
    other = ConditionSchedule.omnihuman(steps=(10, 20, 30), seed=8)
    same = all(
        torch.equal(a.sample(s, 12)["audio"], other.sample(s, 12)["audio"]) for s in range(30, 38)
    )
    assert not same


def test_available_rows_are_never_kept_and_the_draw_is_unchanged():
    s = ConditionSchedule.omnihuman(steps=(1, 1, 100))
    have = torch.tensor([True, False] * 16)
    plain = s.sample(50, 32)
    got = s.sample(50, 32, available={"pose": have, "audio": torch.ones(32, dtype=torch.bool)})
    assert torch.equal(got["pose"], plain["pose"] & have)
    assert not got["pose"][~have].any()
    for c in ("audio", "text", "reference"):
        assert torch.equal(got[c], plain[c])
    with pytest.raises(fb.FlowInputError, match=r"available: unknown condition 'depth'"):
        s.sample(50, 32, available={"depth": have})
    with pytest.raises(fb.FlowInputError, match=r"available\['pose'\].*\(32,\)"):
        s.sample(50, 32, available={"pose": have[:8]})


def stage(name="a", steps=10, **keep):
    return ConditionStage(name=name, steps=steps, keep=keep or {"audio": 0.5})


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: stage(audio=1.5), r"stage 'a': field 'keep\['audio'\]'.*\[0, 1\].*1.5"),
        (lambda: stage(audio=-0.1), r"stage 'a': field 'keep\['audio'\]'"),
        (lambda: stage(audio=float("nan")), r"stage 'a': field 'keep\['audio'\]'.*nan"),
        (lambda: stage(steps=0), r"stage 'a': field 'steps'.*>= 1.*0"),
        (lambda: stage(steps=2.5), r"stage 'a': field 'steps'"),
        (lambda: ConditionStage(name="a", steps=1, keep={}), r"stage 'a': field 'keep'"),
        (lambda: ConditionSchedule([]), r"stages: expected at least one"),
        (
            lambda: ConditionSchedule([stage("a", audio=0.5), stage("b", pose=0.1)]),
            r"stage 'b': field 'keep'.*missing \['audio'\], extra \['pose'\]",
        ),
        (lambda: ConditionSchedule([stage("a"), stage("a")]), r"unique.*\['a'\]"),
        (lambda: ConditionSchedule([stage()], per="epoch"), r"per: expected 'sample' or 'batch'"),
        (lambda: ConditionSchedule.omnihuman(steps=(1, 2)), r"steps: expected 3 stage lengths"),
        (lambda: ConditionSchedule([stage()]).sample(-1, 4), r"step: expected an int >= 0"),
        (lambda: ConditionSchedule([stage()]).sample(0, 0), r"batch_size: expected an int >= 1"),
        (lambda: ConditionSchedule.from_dict({"per": "sample"}), r"missing field 'stages'"),
        (
            lambda: ConditionSchedule.from_dict({"stages": [{"name": "a", "steps": 3}]}),
            r"stages\[0\] \('a'\).*missing \['keep'\]",
        ),
        (
            lambda: ConditionSchedule.from_dict({"stages": [], "ratio": 1}),
            r"unknown key\(s\) \['ratio'\]",
        ),
    ],
)
def test_validation_errors(build, match):
    with pytest.raises(fb.FlowInputError, match=match):
        build()


def test_stage_keep_is_copied_and_masks_follow_the_device_argument():
    keep = {"audio": 0.5}
    st = ConditionStage(name="a", steps=3, keep=keep)
    keep["audio"] = 0.0  # the caller's dict changing later does not change the stage
    assert st.keep == {"audio": 0.5}
    out = ConditionSchedule([st]).sample(0, 5, device="cpu")
    assert out["audio"].device == torch.device("cpu") and out["audio"].dtype == torch.bool
