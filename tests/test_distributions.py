"""Log-densities and KLs against scipy, brute-force integrals and arbitrary-precision arithmetic."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

from vae_jax import distributions as dist

RNG = np.random.default_rng(0)


def test_diag_gaussian_log_prob_matches_scipy():
    x, mean = RNG.normal(size=(2, 50))
    log_var = RNG.uniform(-4, 3, size=50)
    want = stats.norm.logpdf(x, mean, np.exp(0.5 * log_var))
    np.testing.assert_allclose(dist.diag_gaussian_log_prob(x, mean, log_var), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.standard_normal_log_prob(x), stats.norm.logpdf(x), rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_kl_diag_gaussians_matches_numerical_integral(seed):
    rng = np.random.default_rng(seed)
    mq, mp = rng.normal(size=2)
    lq, lp = rng.uniform(-2, 1.5, size=2)
    q = stats.norm(mq, math.exp(lq / 2))
    p = stats.norm(mp, math.exp(lp / 2))
    want, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -30, 30, limit=200)
    assert float(dist.kl_diag_gaussians(mq, lq, mp, lp)) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_kl_standard_normal_is_the_special_case():
    mean, log_var = RNG.normal(size=(2, 30))
    np.testing.assert_allclose(
        dist.kl_standard_normal(mean, log_var),
        dist.kl_diag_gaussians(mean, log_var, 0.0, 0.0),
        rtol=1e-6,
        atol=1e-7,
    )


def test_bernoulli_log_prob_matches_scipy_and_is_exact_in_the_tails():
    logits = RNG.normal(scale=3, size=100)
    x = (RNG.uniform(size=100) < 0.5).astype(np.float32)
    want = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(dist.bernoulli_log_prob(x, logits), want, rtol=1e-5, atol=1e-6)
    # log sigmoid(-100) = -100 - log(1 + e^-100); log sigmoid(100) = -log(1 + e^-100) ~ -3.7e-44.
    extreme = dist.bernoulli_log_prob(jnp.array([0.0, 1.0, 1.0, 0.0]), jnp.array([100.0, -100.0, 1e4, -1e4]))
    np.testing.assert_allclose(extreme, [-100.0, -100.0, 0.0, 0.0], atol=1e-6)
    assert np.all(np.isfinite(extreme))


def _discretized_logistic_mp(x, mean, log_scale):
    """log P(x) with 500-digit arithmetic (enough for sigmoid(800) - 1), from the definition."""
    mpmath.mp.dps = 500
    s = mpmath.exp(mpmath.mpf(log_scale))
    c = mpmath.mpf(2 * x) / 255 - 1
    cdf = lambda t: 1 / (1 + mpmath.exp(-(t - mpmath.mpf(mean)) / s))
    upper = mpmath.mpf(1) if x == 255 else cdf(c + mpmath.mpf(1) / 255)
    lower = mpmath.mpf(0) if x == 0 else cdf(c - mpmath.mpf(1) / 255)
    return float(mpmath.log(upper - lower))


@pytest.mark.parametrize(
    "x,mean,log_scale",
    [
        (0, 0.0, -2.0),
        (255, 0.0, -2.0),
        (128, 0.01, -4.0),
        (255, -1.0, -6.0),  # far in the upper tail
        (0, 1.0, -6.0),  # far in the lower tail
        (3, -0.9, -7.0),  # interior, narrow scale, far from the mean
        (200, 0.5, 3.0),  # very wide scale: the bin is a sliver of the density
        (17, 0.3, -5.5),
    ],
)
def test_discretized_logistic_matches_high_precision_reference(x, mean, log_scale):
    got = float(dist.discretized_logistic_log_prob(jnp.array(x), jnp.array(mean), jnp.array(log_scale)))
    want = _discretized_logistic_mp(x, mean, log_scale)
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_discretized_logistic_sums_to_one_over_256_values():
    values = jnp.arange(256)
    for mean, log_scale in [(0.0, 0.0), (-1.2, -6.0), (0.999, -3.0), (0.3, 4.0), (-0.5, -7.0)]:
        log_probs = dist.discretized_logistic_log_prob(values, mean, log_scale)
        assert float(jax.nn.logsumexp(log_probs)) == pytest.approx(0.0, abs=2e-5)


def test_discretized_logistic_mixture_is_the_weighted_sum_of_components():
    logits, means = RNG.normal(size=(2, 4))
    log_scales = RNG.uniform(-5, 0, size=4)
    x = 77
    components = [_discretized_logistic_mp(x, m, s) for m, s in zip(means, log_scales)]
    weights = np.exp(logits) / np.exp(logits).sum()
    want = math.log(sum(w * math.exp(c) for w, c in zip(weights, components)))
    got = dist.discretized_logistic_mixture_log_prob(jnp.array(x), logits, means, log_scales)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_mixture_of_gaussians_matches_brute_force():
    k, d = 6, 3
    logits = RNG.normal(size=k)
    means = RNG.normal(size=(k, d))
    log_vars = RNG.uniform(-1, 1, size=(k, d))
    z = RNG.normal(size=d)
    weights = np.exp(logits) / np.exp(logits).sum()
    density = sum(
        w * np.prod(stats.norm.pdf(z, m, np.exp(0.5 * lv))) for w, m, lv in zip(weights, means, log_vars)
    )
    got = dist.mixture_of_diag_gaussians_log_prob(z, logits, means, log_vars)
    assert float(got) == pytest.approx(math.log(density), rel=1e-5)


def test_reparameterized_sample_has_the_right_moments_and_gradient():
    mean, log_var = jnp.array([1.5, -2.0]), jnp.array([0.0, -2.0])
    keys = jax.random.split(jax.random.key(0), 20000)
    z = jax.vmap(dist.diag_gaussian_sample, in_axes=(None, None, 0))(mean, log_var, keys)
    standard_error = np.exp(0.5 * np.asarray(log_var)) / math.sqrt(20000)
    assert np.all(np.abs(z.mean(0) - mean) < 4 * standard_error)
    np.testing.assert_allclose(z.var(0), np.exp(log_var), rtol=0.05)
    # dz/dmean = 1 and dz/dlog_var = (z - mean) / 2, by the chain rule through the draw.
    key = jax.random.key(1)
    grad = jax.grad(lambda m, lv: dist.diag_gaussian_sample(m, lv, key).sum(), argnums=(0, 1))(mean, log_var)
    z1 = dist.diag_gaussian_sample(mean, log_var, key)
    np.testing.assert_allclose(grad[0], 1.0)
    np.testing.assert_allclose(grad[1], (z1 - mean) / 2, rtol=1e-5)


def test_discretized_logistic_gradients_stay_finite_for_wide_scales():
    # A discarded branch of jnp.where used to put NaN into the gradient once log_scale > ~11.
    grad = jax.grad(
        lambda s: dist.discretized_logistic_log_prob(jnp.array([0, 1, 128, 254, 255]), 0.1, s).sum()
    )
    for log_scale in (-7.0, 0.0, 11.0, 20.0, 40.0):
        assert np.isfinite(float(grad(log_scale))), log_scale
