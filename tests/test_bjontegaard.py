"""Bjontegaard deltas (vae_jax.bjontegaard) against cases whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_jax.bjontegaard import bd_quality, bd_rate

# A JPEG-like curve: rates in bits per pixel, PSNR in dB, not a polynomial of each other.
RATES = np.array([0.12, 0.25, 0.47, 0.81, 1.40])
PSNRS = np.array([27.9, 30.6, 33.1, 35.4, 38.2])


@pytest.mark.parametrize(("factor", "expected"), [(0.8, -20.0), (1.25, 25.0), (1.0, 0.0)])
def test_scaled_rates_at_the_same_qualities(factor, expected):
    # ln(f R) = ln R + ln f: the fits differ by the constant ln f everywhere, so Delta = ln f.
    assert bd_rate(RATES, PSNRS, factor * RATES, PSNRS) == pytest.approx(expected, abs=1e-9)


def test_worked_example_cubic_against_linear():
    # Anchor: ln R = 0.2 Q - 3 on Q in 30..40; test: ln R = 0.2 Q - 3 + 0.002 (Q - 33)^3 - 0.05 on 31..42.
    # Both are exactly cubics, so the least-squares fits reproduce them. Over the overlap [31, 40]:
    #   Delta = 1/9 * integral_31^40 (0.002 (Q - 33)^3 - 0.05) dQ
    #         = 1/9 * (0.002 * (7^4 - (-2)^4) / 4) - 0.05 = 1/9 * 1.1925 - 0.05 = 0.0825.
    q_anchor = np.array([30.0, 32.0, 35.0, 38.0, 40.0])
    q_test = np.array([31.0, 33.0, 36.0, 39.0, 42.0])
    rates_anchor = np.exp(0.2 * q_anchor - 3)
    rates_test = np.exp(0.2 * q_test - 3 + 0.002 * (q_test - 33) ** 3 - 0.05)
    delta = (0.002 * (7**4 - 2**4) / 4) / 9 - 0.05
    assert delta == pytest.approx(0.0825)
    assert bd_rate(rates_anchor, q_anchor, rates_test, q_test) == pytest.approx(100 * (math.exp(0.0825) - 1), rel=1e-9)


def test_worked_example_linear_shift_in_both_metrics():
    # Anchor Q = 20 + 5 ln R; test Q = 21 + 5 ln R (1 dB better everywhere). At equal quality the test's
    # ln R is smaller by 1/5: BD-rate = 100 (exp(-0.2) - 1) = -18.13%; at equal rate it is 1 dB higher.
    rates_anchor = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    rates_test = np.array([0.15, 0.3, 0.6, 1.2, 2.4])
    q_anchor = 20 + 5 * np.log(rates_anchor)
    q_test = 21 + 5 * np.log(rates_test)
    assert bd_rate(rates_anchor, q_anchor, rates_test, q_test) == pytest.approx(100 * math.expm1(-0.2), rel=1e-9)
    assert bd_quality(rates_anchor, q_anchor, rates_test, q_test) == pytest.approx(1.0, rel=1e-9)


def test_worked_example_bd_quality_cubic():
    # Anchor Q = 30 + 4 L, test Q = 30 + 4 L + 0.3 L^3 with L = ln R on L in -2..1 (both sampled there),
    # so the gap's mean is 1/3 * integral_-2^1 0.3 L^3 dL = 0.1 * (1 - 16) / 4 = -0.375 dB.
    logs = np.array([-2.0, -1.2, -0.5, 0.3, 1.0])
    rates = np.exp(logs)
    assert bd_quality(rates, 30 + 4 * logs, rates, 30 + 4 * logs + 0.3 * logs**3) == pytest.approx(-0.375, rel=1e-9)


def test_least_squares_with_more_points_matches_a_plain_polyfit():
    # Independent of Polynomial.fit's domain mapping: numpy.polyfit on raw PSNRs and polyint.
    q_test = PSNRS + np.array([0.4, 0.9, 1.1, 0.8, 0.6])
    rates_test = RATES * np.array([1.0, 0.9, 1.05, 0.95, 1.1])
    lo, hi = max(PSNRS.min(), q_test.min()), min(PSNRS.max(), q_test.max())
    integral = [np.polyval(np.polyint(np.polyfit(q, np.log(r), 3)), [lo, hi]) for q, r in ((PSNRS, RATES), (q_test, rates_test))]
    delta = ((integral[1][1] - integral[1][0]) - (integral[0][1] - integral[0][0])) / (hi - lo)
    assert bd_rate(RATES, PSNRS, rates_test, q_test) == pytest.approx(100 * math.expm1(delta), rel=1e-7)


def test_swapping_anchor_and_test_inverts_the_ratio():
    q_test = PSNRS + np.array([0.5, 1.0, 0.7, 1.2, 0.2])
    rates_test = RATES * np.array([0.9, 1.1, 1.0, 0.8, 1.3])
    forward = bd_rate(RATES, PSNRS, rates_test, q_test)
    backward = bd_rate(rates_test, q_test, RATES, PSNRS)
    assert forward != pytest.approx(0.0)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, rel=1e-12)
    assert bd_quality(RATES, PSNRS, rates_test, q_test) == pytest.approx(-bd_quality(rates_test, q_test, RATES, PSNRS))


def test_shifted_psnr_gives_its_shift():
    assert bd_quality(RATES, PSNRS, RATES, PSNRS + 1.0) == pytest.approx(1.0, rel=1e-12)
    assert bd_quality(RATES, PSNRS, RATES, PSNRS - 0.25) == pytest.approx(-0.25, rel=1e-12)


def test_order_of_points_does_not_matter():
    order = np.array([3, 0, 4, 1, 2])
    q_test = PSNRS + 0.5
    assert bd_rate(RATES[order], PSNRS[order], RATES, q_test) == pytest.approx(bd_rate(RATES, PSNRS, RATES, q_test))


@pytest.mark.parametrize(
    ("rates_test", "quality_test", "message"),
    [
        (RATES[:3], PSNRS[:3], "at least 4 points"),
        (RATES, PSNRS[:4], "same number of points"),
        (np.where(np.arange(5) == 2, np.nan, RATES), PSNRS, "finite"),
        (RATES, np.where(np.arange(5) == 1, np.inf, PSNRS), "finite"),
        (np.where(np.arange(5) == 0, 0.0, RATES), PSNRS, "positive"),
        (-RATES, PSNRS, "positive"),
        (RATES, PSNRS + 20, "do not overlap"),
        (RATES, np.array([30.0, 30.0, 31.0, 31.0, 32.0]), "distinct"),
        (RATES[None], PSNRS[None], "1-D"),
    ],
)
def test_bad_curves_are_refused(rates_test, quality_test, message):
    with pytest.raises(ValueError, match=message):
        bd_rate(RATES, PSNRS, rates_test, quality_test)


def test_bd_quality_refuses_rates_that_do_not_overlap():
    with pytest.raises(ValueError, match="log-rate: the curves do not overlap"):
        bd_quality(RATES, PSNRS, RATES * 100, PSNRS)
