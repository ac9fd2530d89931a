"""Bjontegaard deltas: the average gap between two rate-quality curves, as one number.

Bjontegaard (2001), "Calculation of average PSNR differences between RD-curves", ITU-T VCEG-M33.
Each curve is a handful of (rate, quality) points of one codec on one image (quality a PSNR in dB,
or any other "higher is better" score on a dB-like scale, such as MS-SSIM as -10 log10(1 - m)).

BD-rate. Fit the logarithm of the rate as a cubic polynomial of the quality for each curve (least
squares; exactly interpolating for 4 points), ln R_a(Q) for the anchor and ln R_t(Q) for the test
codec, and average their difference over the quality interval both curves cover, [Q_lo, Q_hi]:

    Delta = 1 / (Q_hi - Q_lo) * integral_{Q_lo}^{Q_hi} (ln R_t(Q) - ln R_a(Q)) dQ
    BD-rate = 100 (exp(Delta) - 1)   percent

the mean change of the test codec's rate against the anchor's at equal quality: negative means the
test codec needs fewer bits. (VCEG-M33 writes log10 and 10^x; the ratio is the same in any base.)

BD-quality (BD-PSNR). The same with the roles swapped: the quality fitted as a cubic of ln R,
averaged over the common ln-rate interval, the mean quality gain of the test codec in dB at equal
rate.

The cubic is fitted on the abscissa mapped onto [-1, 1] (``numpy.polynomial.Polynomial.fit``)
rather than on raw PSNRs of ~30-45, whose powers up to the cube make a badly conditioned
Vandermonde matrix; the fitted function is the same, only the rounding differs.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import Polynomial

MIN_POINTS = 4  # a cubic has four coefficients
DEGREE = 3


def _curve(name: str, values, *, positive: bool = False) -> np.ndarray:
    """``values`` as a float64 vector, checked: 1-D, at least ``MIN_POINTS`` long, finite (and > 0)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {array.shape}")
    if array.size < MIN_POINTS:
        raise ValueError(f"{name}: a cubic fit needs at least {MIN_POINTS} points, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: every value must be finite, got {array.tolist()}")
    if positive and not np.all(array > 0):
        raise ValueError(f"{name}: rates must be positive (their logarithm is fitted), got {array.tolist()}")
    return array


def _pair(label: str, rates, quality) -> tuple[np.ndarray, np.ndarray]:
    """One curve's (rates, qualities), checked against each other."""
    rates = _curve(f"rates_{label}", rates, positive=True)
    quality = _curve(f"quality_{label}", quality)
    if rates.size != quality.size:
        raise ValueError(
            f"rates_{label} and quality_{label}: expected the same number of points, got {rates.size} and {quality.size}"
        )
    return rates, quality


def _mean_gap(x_anchor, y_anchor, x_test, y_test, what: str) -> float:
    """Mean of (cubic fit of y_test on x_test) - (cubic fit of y_anchor on x_anchor) over the
    interval of x both curves cover: 1 / (hi - lo) * integral_lo^hi (p_t(x) - p_a(x)) dx."""
    for label, x in (("anchor", x_anchor), ("test", x_test)):
        if np.unique(x).size < MIN_POINTS:
            raise ValueError(
                f"{what} of the {label} curve: a cubic fit needs at least {MIN_POINTS} distinct values, "
                f"got {np.unique(x).tolist()}"
            )
    lo = max(x_anchor.min(), x_test.min())
    hi = min(x_anchor.max(), x_test.max())
    if not lo < hi:
        raise ValueError(
            f"{what}: the curves do not overlap (anchor {x_anchor.min():.4g}..{x_anchor.max():.4g}, "
            f"test {x_test.min():.4g}..{x_test.max():.4g}), so there is no common interval to average over"
        )
    integrals = []
    for x, y in ((x_anchor, y_anchor), (x_test, y_test)):
        antiderivative = Polynomial.fit(x, y, DEGREE).integ()  # integ() accounts for the [-1, 1] mapping
        integrals.append(antiderivative(hi) - antiderivative(lo))
    return float((integrals[1] - integrals[0]) / (hi - lo))


def bd_rate(rates_anchor, quality_anchor, rates_test, quality_test) -> float:
    """BD-rate in percent: 100 (exp(Delta) - 1), Delta the mean of ln R_test(Q) - ln R_anchor(Q) over
    the common quality interval, each ln R(Q) a cubic least-squares fit (Bjontegaard 2001).
    Negative: the test codec spends fewer bits than the anchor at equal quality.

    Rates in any positive unit (bytes, bits per pixel: the same for both curves); at least 4 points
    per curve, with at least 4 distinct qualities. Raises ``ValueError`` naming what is wrong,
    including curves whose quality ranges do not overlap."""
    rates_anchor, quality_anchor = _pair("anchor", rates_anchor, quality_anchor)
    rates_test, quality_test = _pair("test", rates_test, quality_test)
    delta = _mean_gap(quality_anchor, np.log(rates_anchor), quality_test, np.log(rates_test), "quality")
    return 100.0 * math.expm1(delta)


def bd_quality(rates_anchor, quality_anchor, rates_test, quality_test) -> float:
    """BD-quality (BD-PSNR, in the quality's own unit, e.g. dB): the mean of Q_test(ln R) -
    Q_anchor(ln R) over the common ln-rate interval, each Q(ln R) a cubic least-squares fit
    (Bjontegaard 2001). Positive: the test codec has the higher quality at equal rate.

    The same inputs and checks as ``bd_rate``, with at least 4 distinct rates per curve."""
    rates_anchor, quality_anchor = _pair("anchor", rates_anchor, quality_anchor)
    rates_test, quality_test = _pair("test", rates_test, quality_test)
    return _mean_gap(np.log(rates_anchor), quality_anchor, np.log(rates_test), quality_test, "log-rate")
