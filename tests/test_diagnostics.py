"""Diagnostics against values computed by hand: active units, per-group KL, bits/dim split."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import diagnostics
from vae_jax.hierarchical import hierarchical_vae

DIMS, LATENT = 4, 3
# Posterior means: unit 0 = x_0 (variance 1/12 over uniform data), unit 1 = 0.1 x_1 (1/1200),
# unit 2 = 0.3 for every x (variance 0). Log-variances: a fixed linear function of x.
MEAN_KERNEL = np.array([[1.0, 0, 0], [0, 0.1, 0], [0, 0, 0], [0, 0, 0]])
MEAN_BIAS = np.array([0.0, 0.2, 0.3])
LOG_VAR_KERNEL = np.array([[0.5, 0, 0], [0, -1.0, 0], [0, 0, 0.3], [0.2, 0.2, 0.2]])
LOG_VAR_BIAS = np.array([-1.0, 0.0, -0.5])


@pytest.fixture(scope="module")
def linear():
    """A linear-Gaussian VAE whose encoder is set by hand, so its posterior is known."""
    model = vae_jax.linear_gaussian(DIMS, LATENT, obs_var=0.1)
    params = vae_jax.init(model, jax.random.key(0))
    as_f32 = lambda a: jnp.asarray(a, jnp.float32)
    params["encoder"] = {
        "mean": {"kernel": as_f32(MEAN_KERNEL), "bias": as_f32(MEAN_BIAS)},
        "log_var": {"kernel": as_f32(LOG_VAR_KERNEL), "bias": as_f32(LOG_VAR_BIAS)},
    }
    x = np.random.default_rng(0).uniform(size=(300, DIMS)).astype(np.float32)
    return model, params, x


def test_active_units_are_the_units_whose_posterior_mean_varies_over_the_data(linear):
    model, params, x = linear
    want = np.var(x.astype(np.float64) @ MEAN_KERNEL + MEAN_BIAS, axis=0)  # population variance
    result = diagnostics.active_units(model, params, x)
    np.testing.assert_allclose(result.activity, want, rtol=1e-5, atol=1e-12)
    assert result.count == 1 and result.active.tolist() == [True, False, False]
    assert diagnostics.active_units(model, params, x, threshold=5e-4).count == 2
    # Streaming over uneven batches gives the same variances as one pass over all examples.
    batches = (x[:7], x[7:150], x[150:])
    np.testing.assert_allclose(
        diagnostics.active_units(model, params, batches).activity, want, rtol=1e-5, atol=1e-12
    )


def test_active_units_reject_a_single_example(linear):
    model, params, x = linear
    with pytest.raises(ValueError, match="x_batches_or_x"):
        diagnostics.active_units(model, params, x[0])
    with pytest.raises(ValueError, match="at least 2 examples"):
        diagnostics.active_units(model, params, [x[:1]])


def _hand_kl(x):
    """KL(N(mean, var) || N(0, I)) per example, from the hand-set encoder."""
    x = np.asarray(x, np.float64)
    mean, log_var = x @ MEAN_KERNEL + MEAN_BIAS, x @ LOG_VAR_KERNEL + LOG_VAR_BIAS
    log_var = 10.0 * np.tanh(log_var / 10.0)  # the encoders' soft clamp on log-variances
    return 0.5 * np.sum(mean**2 + np.exp(log_var) - log_var - 1.0, axis=-1)


def test_kl_per_group_of_a_one_group_model(linear):
    model, params, x = linear
    x = x[:16]
    want = _hand_kl(x).mean()
    result = diagnostics.kl_per_group(model, params, x, jax.random.key(1))
    np.testing.assert_allclose(result.nats, [want], rtol=1e-5)
    np.testing.assert_allclose(result.bits_per_dim, [want / (DIMS * math.log(2))], rtol=1e-5)
    np.testing.assert_allclose(result.fraction, [1.0])


def test_bits_per_dim_split_adds_up_and_counts_dequantization(linear):
    model, params, x = linear
    x, key = x[:16], jax.random.key(2)
    terms = vae_jax.elbo_terms(model, params, x, key)
    nats_to_bpd = 1.0 / (DIMS * math.log(2))
    split = diagnostics.bits_per_dim_split(model, params, x, key)
    np.testing.assert_allclose(split["kl_bpd"], _hand_kl(x).mean() * nats_to_bpd, rtol=1e-5)
    np.testing.assert_allclose(
        split["reconstruction_bpd"], -np.mean(terms.reconstruction) * nats_to_bpd, rtol=1e-5
    )
    np.testing.assert_allclose(
        split["total_bpd"], -np.mean(vae_jax.elbo(model, params, x, key)) * nats_to_bpd, rtol=1e-5
    )
    np.testing.assert_allclose(split["total_bpd"], split["reconstruction_bpd"] + split["kl_bpd"], rtol=1e-5)
    # Dequantized 8-bit data: D ln 256 nats more, i.e. exactly 8 bits/dim, all of it reconstruction.
    dequantized = diagnostics.bits_per_dim_split(model, params, x, key, dequantized=True)
    np.testing.assert_allclose(dequantized["total_bpd"], split["total_bpd"] + 8.0, rtol=1e-6)
    np.testing.assert_allclose(
        dequantized["reconstruction_bpd"], split["reconstruction_bpd"] + 8.0, rtol=1e-6
    )
    np.testing.assert_allclose(dequantized["kl_bpd"], split["kl_bpd"])
    bernoulli = vae_jax.mlp_vae((DIMS,), hidden=(), latent_dim=LATENT)
    with pytest.raises(ValueError, match="dequantized"):
        diagnostics.bits_per_dim_split(bernoulli, params, jnp.zeros((2, DIMS)), key, dequantized=True)


def test_diagnostics_of_a_hierarchical_model():
    model = hierarchical_vae(
        (4, 4, 3), widths=(8,), groups_per_stage=(3,), latent_channels=2, blocks_per_stage=0,
        likelihood=vae_jax.DiscretizedLogisticMixture(2),
    )
    params = vae_jax.init(model, jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(3).integers(0, 256, (6, 4, 4, 3)), jnp.int32)
    key = jax.random.key(4)
    terms = vae_jax.elbo_terms(model, params, x, key)
    per_group = np.array([np.mean(kl) for kl in terms.kl_groups])
    dims = 4 * 4 * 3

    result = diagnostics.kl_per_group(model, params, x, key)
    np.testing.assert_allclose(result.nats, per_group, rtol=1e-6)
    np.testing.assert_allclose(result.bits_per_dim, per_group / (dims * math.log(2)), rtol=1e-6)
    np.testing.assert_allclose(result.fraction, per_group / per_group.sum(), rtol=1e-6)

    split = diagnostics.bits_per_dim_split(model, params, x, key)
    assert len(split["kl_bpd_groups"]) == 3
    np.testing.assert_allclose(split["kl_bpd_groups"], result.bits_per_dim, rtol=1e-6)
    np.testing.assert_allclose(sum(split["kl_bpd_groups"]), split["kl_bpd"], rtol=1e-5)
    np.testing.assert_allclose(
        split["total_bpd"], -np.mean(vae_jax.elbo(model, params, x, key)) / (dims * math.log(2)), rtol=1e-6
    )

    units = diagnostics.active_units(model, params, x)  # every group, along the posterior-mean path
    means = vae_jax.encode(model, params, x)[0]
    assert len(units.activity) == len(units.active) == model.num_groups == 3
    for activity, group_means, shape in zip(units.activity, means, model.group_shapes):
        assert activity.shape == shape
        np.testing.assert_allclose(activity, np.asarray(group_means, np.float64).var(axis=0), rtol=1e-4, atol=1e-10)
    assert units.count == sum(int(a.sum()) for a in units.active)
