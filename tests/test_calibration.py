"""Trust-level calibration: the deviation-error fit, its quantile, outliers, the fallbacks and the
labelable-frames floor of trust_hi, each against synthetic frames of a known power law."""

import json
import re
from dataclasses import asdict

import numpy as np
import pytest

from lfpo_al.errors import UserError
from lfpo_al.selection import calibrate


def power_law_frames(n=400, seed=0, noise=0.25):
    rng = np.random.default_rng(seed)
    deviation = np.exp(rng.uniform(np.log(0.01), np.log(2.0), n))
    error = 0.8 * deviation**1.2 * np.exp(rng.normal(0.0, noise, n))
    return deviation, error


def test_calibration_recovers_power_law(tmp_path):
    deviation, error = power_law_frames()
    result = calibrate(deviation, error, target_force_error=0.15, out_png=tmp_path / "calibration.png")
    assert result.fallback is None and result.n_frames == 400
    assert result.spearman_rho > 0.9 and result.spearman_p < 1e-10
    assert result.slope == pytest.approx(1.2, abs=0.05) and result.prefactor == pytest.approx(0.8, rel=0.1)
    assert result.trust_lo == pytest.approx((0.15 / 0.8) ** (1 / 1.2), rel=0.08)
    derived_hi = result.trust_hi_derived or result.trust_hi
    assert derived_hi == pytest.approx((0.6 / 0.8) ** (1 / 1.2), rel=0.08)
    assert result.trust_hi == pytest.approx(max(derived_hi, deviation.max()))
    assert (tmp_path / "calibration.png").stat().st_size > 10_000
    json.dumps(asdict(result), allow_nan=False)


def test_young_model_keeps_labelable_frames_as_candidates():
    """Error far above the target at every measured deviation: all frames are worth labeling, none failed."""
    rng = np.random.default_rng(3)
    deviation = rng.uniform(0.07, 0.6, size=30)
    error = 4.0 * deviation * np.exp(rng.normal(scale=0.2, size=30))
    result = calibrate(deviation, error, target_force_error=0.15)
    assert result.trust_lo < deviation.min()
    assert result.trust_hi_derived < deviation.max() and result.trust_hi == pytest.approx(deviation.max())
    assert any("trust_hi raised" in w for w in result.warnings)


def test_calibration_quantile_is_more_cautious():
    deviation, error = power_law_frames()
    median = calibrate(deviation, error, 0.15)
    cautious = calibrate(deviation, error, 0.15, error_quantile=0.9)
    assert cautious.trust_lo < median.trust_lo
    # with log-normal noise of sigma 0.25 the 90 % error quantile is exp(1.2816 * 0.25) above the median
    assert cautious.trust_lo == pytest.approx(median.trust_lo * np.exp(-1.2816 * 0.25 / 1.2), rel=0.05)


def test_calibration_is_robust_to_outliers():
    deviation, error = power_law_frames()
    error[:40] = 50.0  # 10 % broken labels
    assert calibrate(deviation, error, 0.15).trust_lo == pytest.approx((0.15 / 0.8) ** (1 / 1.2), rel=0.15)


@pytest.mark.parametrize(
    "deviation,error,reason",
    [
        ([0.1, 0.2], [0.3, 0.4], "only 2 frame"),
        ([0.1, np.nan, 0.3, -1.0], [0.2, 0.3, np.inf, 0.5], "only 1 frame"),
        ([0.2] * 5, [0.1, 0.2, 0.3, 0.4, 0.5], "all 5 deviations are equal"),
        ([0.1, 0.2, 0.3, 0.4], [0.3] * 4, "all 4 force errors are equal"),
        ([0.1, 0.2, 0.3, 0.4], [0.8, 0.6, 0.4, 0.2], "slope .* is not positive"),
    ],
)
def test_calibration_degenerate_inputs_fall_back(tmp_path, deviation, error, reason):
    result = calibrate(deviation, error, 0.15, out_png=tmp_path / "c.png", trust_hi_factor=3.0)
    assert result.fallback is not None and re.search(reason, result.fallback), result.fallback
    assert (result.trust_lo, result.trust_hi) == pytest.approx((0.15, 0.45))
    assert result.method.startswith("fallback") and (tmp_path / "c.png").is_file()


def test_calibration_rejects_bad_arguments():
    with pytest.raises(UserError, match="3 deviations but 2 force errors"):
        calibrate([0.1, 0.2, 0.3], [0.1, 0.2], 0.15)
    with pytest.raises(UserError, match="target_force_error=0"):
        calibrate([0.1], [0.1], 0.0)
