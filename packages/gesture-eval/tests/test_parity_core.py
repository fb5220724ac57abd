"""Parity of FGD (Fréchet distance), BC and L1div with the reference implementations.

How the numbers below were recorded (2026-11-21): the reference files were taken from
PantoMatrix/PantoMatrix -- ``emage_evaltools/mertic.py`` at commit 0bbb03d (variant
"evaltools") and ``scripts/EMAGE_2024/utils/metric.py`` plus ``dataloaders/data_tools.py``
(class ``FIDCalculator``) at commit 6ca70b9 (variant "cvpr24", byte-identical to GestureLSM's
``utils/metric.py``) -- and run unmodified from /tmp (plotting/download imports stubbed) in
the workspace venv (numpy 2.4.6, scipy 1.17.1, librosa 0.11.0), on the arrays produced by
``gesture_eval.synthetic`` with the seeds used below. The driver called them the way their
trainers do: evaltools ``BC.load_audio(audio, 2*16000, int((t-60)/30*16000), without_file=True)``,
``BC.load_motion(joints.reshape(t, -1), 60, t-60, 30, without_file=True)``,
``BC.compute(..., length=t-120)``; cvpr24 ``alignment(0.3, 7, mmae)`` with the CVPR'24
trainer's audio handling (wav written as float32, ``librosa.load`` at 22.05 kHz,
``librosa.resample`` to 16 kHz, cut to ``int(16000/30*n)``, sliced from 32000 to
``len(audio) - 32000``) and ``calculate_align(...) * (n - 120)`` summed then divided by
``total - 2*3*60``; L1div via ``L1div.compute`` / ``L1div.run`` on ``(t, 165)`` arrays.
"""

import numpy as np
import pytest

from gesture_eval import (
    BeatConsistency,
    L1Diversity,
    beat_consistency,
    frechet_distance,
    l1_diversity,
)
from gesture_eval import synthetic as S

RTOL = 1e-6

FGD_REF = {
    ("gauss", "evaltools"): 67.43098889726349,
    ("gauss", "cvpr24"): 67.43112375122126,
    ("lowrank", "evaltools"): 26.563407984283167,
    ("lowrank", "cvpr24"): 26.56953359845531,
}
FGD_SELF_REF = {
    ("gauss", "evaltools"): -6.400000177109177e-05,
    ("gauss", "cvpr24"): 1.7053025658242404e-12,
    ("lowrank", "evaltools"): -6.39999890523768e-05,
    ("lowrank", "cvpr24"): -3.676167992239243e-07,
}
BC_REF = {
    "evaltools": (0.706840875802609, [0.6979961842707331, 0.7075282966536112, 0.7130046524622233]),
    "evaltools_no_mean_velocity": (
        0.3948396628598454,
        [0.45306680956098583, 0.3750150887841036, 0.3717464179669401],
    ),
    "cvpr24": (0.6023682656309644, [0.6077214023530023, 0.6098486499159846, 0.5896132190236257]),
}
L1DIV_REF = 17.708309173583984  # both references give this value
LENGTHS = (450, 600, 540)


def _fgd_inputs(case):
    if case == "gauss":
        return S.gaussian_features(400, 32, mix=0.3, seed=1), S.gaussian_features(
            300, 32, shift=0.2, mix=0.3, seed=2
        )
    return S.gaussian_features(20, 32, seed=3), S.gaussian_features(24, 32, shift=0.1, seed=4)


def _sequences():
    return [
        (S.random_walk_joints(t, seed=10 + i), S.click_track(t / 30 + 0.5, seed=20 + i)[0])
        for i, t in enumerate(LENGTHS)
    ]


@pytest.mark.parametrize("case", ["gauss", "lowrank"])
@pytest.mark.parametrize("variant", ["evaltools", "cvpr24"])
def test_frechet_distance_matches_reference(case, variant):
    """Gaussian features: 400x32 vs 300x32 correlated; 20x32 vs 24x32 (singular covariances)."""
    a, b = _fgd_inputs(case)
    assert frechet_distance(a, b, variant=variant) == pytest.approx(
        FGD_REF[case, variant], rel=RTOL
    )
    # A set against itself. evaltools adds eps * I to both covariances, so its value is the
    # offset -2 * 32 * 1e-6 and is pinned. cvpr24 takes sqrtm of a rank-deficient product in the
    # low-rank case, and sqrtm keeps about half the float64 digits there: its error is about
    # sqrt(eps) * trace = 1.5e-8 * 32 = 5e-7. The reference gave -3.68e-7 and so did ours on
    # the CPU the numbers were recorded on; on an AMD EPYC ours gives -3.11e-7 (1 or 2
    # threads, either test order). Only that noise bound is asserted there: 2e-6, 4x the
    # estimate.
    singular = case == "lowrank" and variant == "cvpr24"
    assert frechet_distance(a, a, variant=variant) == pytest.approx(
        FGD_SELF_REF[case, variant], rel=1e-4, abs=2e-6 if singular else 1e-9
    )


@pytest.mark.parametrize("key", ["evaltools", "evaltools_no_mean_velocity", "cvpr24"])
def test_beat_consistency_matches_reference(key):
    """Three random-walk sequences (450/600/540 frames, seeds 10-12) with click tracks 0.5 s
    longer than the motion (seeds 20-22), mean speed ``synthetic_mean_velocity(seed=5)``."""
    variant = key.split("_")[0]
    mv = None if key.endswith("no_mean_velocity") else S.synthetic_mean_velocity(seed=5)
    metric = BeatConsistency(mean_velocity=mv, variant=variant)
    seqs = _sequences()
    for joints, audio in seqs:
        metric.update(joints, audio)
    total, per_seq = BC_REF[key]
    assert float(metric.compute()) == pytest.approx(total, rel=RTOL)
    if mv is not None:  # the no-mean-velocity fallback is sticky, only the class reproduces it
        for (joints, audio), ref in zip(seqs, per_seq, strict=True):
            assert beat_consistency(
                joints, audio, mean_velocity=mv, variant=variant
            ) == pytest.approx(ref, rel=RTOL)


def test_cvpr24_without_roundtrip_matches_reference_on_16k_arrays():
    """Same inputs, reference ``alignment`` fed the 16 kHz arrays directly (no 22.05 kHz round
    trip): recorded 0.6023682656309644 (the clicks survive the resampling unchanged)."""
    mv = S.synthetic_mean_velocity(seed=5)
    metric = BeatConsistency(mean_velocity=mv, variant="cvpr24", resample_roundtrip=False)
    for joints, audio in _sequences():
        metric.update(joints, audio)
    assert float(metric.compute()) == pytest.approx(0.6023682656309644, rel=RTOL)


def test_index_offset_opt_out_changes_the_score_and_reads_the_right_frame():
    mv = S.synthetic_mean_velocity(seed=5)
    joints, audio = _sequences()[1]
    quirk = beat_consistency(joints, audio, mean_velocity=mv)
    fixed = beat_consistency(joints, audio, mean_velocity=mv, fix_index_offset=True)
    assert quirk == pytest.approx(BC_REF["evaltools"][1][1], rel=RTOL)
    assert fixed != pytest.approx(quirk, rel=1e-3)
    # Raising the threshold to 0 removes the threshold and with it the quirk.
    a = beat_consistency(joints, audio, mean_velocity=mv, threshold=0.0)
    b = beat_consistency(joints, audio, mean_velocity=mv, threshold=0.0, fix_index_offset=True)
    assert a == b


@pytest.mark.parametrize("variant", ["evaltools", "cvpr24"])
def test_l1_diversity_matches_reference(variant):
    """Random-walk joints (seeds 10-12), float32 (t, 165); the reference sums in float32."""
    metric = L1Diversity(variant=variant)
    seqs = _sequences()
    for joints, _ in seqs:
        metric.update(joints)
    assert float(metric.compute()) == pytest.approx(L1DIV_REF, rel=RTOL)
    one = l1_diversity(seqs[0][0])
    flat = seqs[0][0].reshape(len(seqs[0][0]), -1).astype(np.float64)
    assert one == pytest.approx(np.abs(flat - flat.mean(0)).sum() / len(flat), rel=1e-5)
