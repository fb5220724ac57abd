"""Energy distance (against a direct numpy formula) and the mean joint speed."""

import numpy as np
import pytest
import torch

from gesture_eval import EnergyDistance, EvalError, energy_distance, mean_joint_speed
from gesture_eval.beat import joint_speed


def _numpy_energy(a, b, unbiased=False):
    """Textbook form with every pairwise distance materialised."""

    def dist(x, y):
        return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))

    n, m = len(a), len(b)
    daa, dbb = dist(a, a).sum(), dist(b, b).sum()
    if unbiased:
        return 2 * dist(a, b).mean() - daa / (n * (n - 1)) - dbb / (m * (m - 1))
    return 2 * dist(a, b).mean() - daa / n**2 - dbb / m**2


def test_hand_computed_values():
    assert energy_distance([[0.0]], [[1.0]]) == pytest.approx(2.0)  # 2*1 - 0 - 0
    # cross mean 1, within {0, 2}: (0 + 2 + 2 + 0) / 4 = 1 -> 2 - 1 - 0
    assert energy_distance([[0.0], [2.0]], [[1.0]]) == pytest.approx(1.0)
    # unbiased within {0, 2}: 4 / 2 = 2; within {1, 1}: 0 -> 2*1 - 2 - 0
    assert energy_distance([[0.0], [2.0]], [[1.0], [1.0]], unbiased=True) == pytest.approx(0.0)
    # 3-4-5 triangle: one point each, distance 5
    assert energy_distance([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(10.0)


@pytest.mark.parametrize("unbiased", [False, True])
def test_matches_numpy_formula(unbiased):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 8))
    b = rng.normal(0.3, 1.2, size=(250, 8)).astype(np.float32)
    ours = energy_distance(a, b, unbiased=unbiased)
    ref = _numpy_energy(a, b.astype(np.float64), unbiased)
    # the V-statistic carries cdist's ~1e-6 self-distance noise / N (see energy.py)
    assert ours == pytest.approx(ref, rel=1e-9, abs=2e-6 / 250)


def test_properties():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 4))
    assert energy_distance(a, a) == 0.0  # V-statistic: exactly zero for identical sets
    assert energy_distance(a, a, unbiased=True) < 0  # U-statistic: biased towards 0 from below
    shifts = [energy_distance(a, a + s) for s in (0.1, 0.5, 2.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]  # grows with the shift
    b = rng.normal(size=(150, 4))
    assert energy_distance(a, b) == pytest.approx(energy_distance(b, a), rel=1e-12)  # symmetric
    # a large set still matches, through several cdist blocks (2048 rows each)
    big = rng.normal(size=(2100, 2))
    assert energy_distance(big, big[:50] + 1) == pytest.approx(
        _numpy_energy(big, big[:50] + 1), rel=1e-9, abs=2e-6 / 50
    )


def test_metric_class_is_split_invariant():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(90, 5)), rng.normal(0.5, 1, size=(70, 5))
    metric = EnergyDistance()
    for i in range(0, 90, 30):
        metric.update(torch.from_numpy(a[i : i + 30]), b[i * 70 // 90 : (i + 30) * 70 // 90])
    assert float(metric.compute()) == pytest.approx(energy_distance(a, b), rel=1e-12)
    metric.reset()
    # torchmetrics warns first that compute() runs before update(); the error says it plainly
    with pytest.warns(UserWarning, match="before the"), pytest.raises(EvalError, match="before"):
        metric.compute()
    unbiased = EnergyDistance(unbiased=True)
    unbiased.update(a, b)
    assert float(unbiased.compute()) == pytest.approx(_numpy_energy(a, b, True), rel=1e-9)


def test_bad_inputs_name_the_argument():
    with pytest.raises(EvalError, match=r"feats_a and feats_b must have the same D"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(EvalError, match=r"feats_b must be \(N, D\)"):
        energy_distance(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(EvalError, match=r"feats_a contains 1 NaN"):
        energy_distance(np.array([[np.nan, 0.0]]), np.zeros((2, 2)))
    with pytest.raises(EvalError, match=r"feats_a needs at least 2 samples"):
        energy_distance(np.zeros((1, 2)), np.zeros((2, 2)), unbiased=True)


# ----- mean joint speed ------------------------------------------------------------------


def test_mean_joint_speed_values():
    T = 10
    moving = np.zeros((T, 2, 3), np.float32)
    moving[:, 0, 0] = 0.1 * np.arange(T)  # joint 0: 0.1 m a frame at 30 fps = 3 m/s
    still = np.zeros((5, 2, 3), np.float32)
    speed = mean_joint_speed([moving, still], fps=30)
    # 10 frames at 3 m/s and 5 at 0 -> 2 m/s; the still joint floors at 1e-6
    np.testing.assert_allclose(speed, [2.0, 1e-6], rtol=1e-5)
    assert speed.dtype == np.float32


def test_mean_joint_speed_matches_the_apps_formula():
    rng = np.random.default_rng(3)
    joints = [rng.normal(size=(t, 55, 3)).astype(np.float32) for t in (40, 33, 2)]
    # what gesture_apps.pipelines.mean_joint_speed computed before it moved here
    ref = np.maximum(np.concatenate([joint_speed(j, 30) for j in joints]).mean(axis=0), 1e-6)
    np.testing.assert_array_equal(mean_joint_speed(joints, 30), ref)


def test_mean_joint_speed_bad_input():
    with pytest.raises(EvalError, match="at least one"):
        mean_joint_speed([])
    with pytest.raises(EvalError, match=r"joints\[1\]: a speed needs at least 2 frames"):
        mean_joint_speed([np.zeros((4, 3, 3)), np.zeros((1, 3, 3))])
    with pytest.raises(EvalError, match=r"joints\[1\]: 2 joints, but joints\[0\] has 3"):
        mean_joint_speed([np.zeros((4, 3, 3)), np.zeros((4, 2, 3))])
    with pytest.raises(EvalError, match=r"joints\[0\] must be \(T, J, 3\)"):
        mean_joint_speed([np.zeros((4, 3, 2))])
    with pytest.raises(EvalError, match="fps must be a positive number"):
        mean_joint_speed([np.zeros((4, 3, 3))], fps=0)
