"""The lossy codec's model: GDN, the two entropy models against closed forms and brute-force sums,
the rate-distortion objective's terms, and training through the run machinery."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import config as config_lib
from vae_jax import entropy_models, rate_distortion
from vae_jax.networks.gdn import GDN


def test_gdn_and_its_inverse_compute_their_equations():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    layer = GDN()
    params = layer.init(jax.random.key(1), x)
    beta_root = jax.random.uniform(jax.random.key(2), (5,), minval=0.5, maxval=1.5)
    gamma_root = jax.random.uniform(jax.random.key(3), (5, 5), maxval=0.5)
    params = {"params": {"beta_root": beta_root, "gamma_root": gamma_root}}
    beta, gamma = np.asarray(beta_root, np.float64) ** 2 + 1e-6, np.asarray(gamma_root, np.float64) ** 2
    x64 = np.asarray(x, np.float64)
    pool = beta + np.einsum("...j,ij->...i", x64**2, gamma)  # beta_i + sum_j gamma_ij x_j^2
    np.testing.assert_allclose(layer.apply(params, x), x64 / np.sqrt(pool), rtol=1e-5)
    np.testing.assert_allclose(GDN(inverse=True).apply(params, x), x64 * np.sqrt(pool), rtol=1e-5)


@pytest.fixture(scope="module")
def density():
    params = entropy_models.init_factorized(jax.random.key(0), 4)
    # Move the density off its start, so that the tanh factors and biases matter.
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [a + 0.5 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def test_factorized_density_is_a_cumulative_and_its_masses_sum_to_one(density):
    grid = np.linspace(-200, 200, 4001)
    cdf = entropy_models.factorized_cdf(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), density),
                                        np.broadcast_to(grid, (4, grid.size)), xp=np)  # fmt: skip
    assert np.all(np.diff(cdf, axis=1) >= 0) and np.all(cdf[:, 0] < 1e-6) and np.all(cdf[:, -1] > 1 - 1e-6)
    integers = jnp.arange(-200.0, 201.0)
    masses = entropy_models.factorized_bin_mass(density, jnp.broadcast_to(integers[:, None], (integers.size, 4)))
    np.testing.assert_allclose(np.sum(np.asarray(masses, np.float64), axis=0), 1.0, atol=1e-4)


def test_factorized_masses_agree_in_numpy_float64_and_jax_float32(density):
    values = np.linspace(-6.3, 7.1, 40)
    points = np.broadcast_to(values[:, None], (values.size, 4))
    in_jax = entropy_models.factorized_bin_mass(density, jnp.asarray(points))
    in_numpy = entropy_models.factorized_bin_mass(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), density),
                                                  points, xp=np)  # fmt: skip
    np.testing.assert_allclose(in_jax, in_numpy, rtol=2e-4, atol=1e-9)
    # p(x) = c(x + 1/2) - c(x - 1/2), from the cumulative itself
    params64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), density)
    upper = entropy_models.factorized_cdf(params64, (points + 0.5).T, xp=np)
    lower = entropy_models.factorized_cdf(params64, (points - 0.5).T, xp=np)
    np.testing.assert_allclose(in_numpy, np.maximum(upper - lower, 1e-9).T, rtol=1e-9)


def test_gaussian_bin_mass_is_the_normal_mass_of_the_unit_bin():
    y = jnp.array([-3.7, -0.2, 0.0, 0.4, 2.5, 9.0, 40.0])
    mean = jnp.array([0.3, 0.0, -1.0, 0.4, 2.0, 0.0, 0.0])
    scale = jnp.array([1.5, 0.05, 2.0, 0.3, 10.0, 1.0, 1.0])
    bounded = np.maximum(np.asarray(scale, np.float64), entropy_models.SCALE_MIN)
    y64, mean64 = np.asarray(y, np.float64), np.asarray(mean, np.float64)
    expected = stats.norm.cdf(y64 + 0.5, mean64, bounded) - stats.norm.cdf(y64 - 0.5, mean64, bounded)
    np.testing.assert_allclose(entropy_models.gaussian_bin_mass(y, mean, scale), np.maximum(expected, 1e-9), rtol=1e-5)
    integers = jnp.arange(-60.0, 61.0)
    total = jnp.sum(entropy_models.gaussian_bin_mass(integers, 0.37, 6.0))
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def small_codec():
    model = rate_distortion.HyperpriorCodec((64, 64, 3), width=16, latent_channels=12)
    return model, jax.jit(model.init)(jax.random.key(0))


def test_quantized_terms_are_the_masses_of_the_rounded_latents(small_codec):
    model, params = small_codec
    x = jax.random.uniform(jax.random.key(1), (2, 64, 128, 3))
    terms = rate_distortion.quantized_terms(model, params, x)
    y_hat, z_hat, mean, scale = rate_distortion.quantized_latents(model, params, x)
    np.testing.assert_allclose(jnp.round(y_hat - mean), y_hat - mean, atol=1e-5)  # integers off the mean
    y_bits = -np.log2(np.asarray(entropy_models.gaussian_bin_mass(y_hat, mean, scale), np.float64)).sum(axis=(1, 2, 3))
    z_mass = entropy_models.factorized_bin_mass(params["hyper_density"], z_hat)
    z_bits = -np.log2(np.asarray(z_mass, np.float64)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(terms.y_bits, y_bits, rtol=1e-4)
    np.testing.assert_allclose(terms.z_bits, z_bits, rtol=1e-4)
    reconstruction = model.synthesis(params, y_hat)
    np.testing.assert_allclose(terms.squared_error, np.sum((255 * (x - reconstruction)) ** 2, axis=(1, 2, 3)), rtol=1e-4)


def test_the_loss_is_rate_per_pixel_plus_lambda_mse(small_codec):
    model, params = small_codec
    batch = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    key = jax.random.key(4)
    loss, metrics = rate_distortion.rate_distortion_loss(model, lmbda=0.01)(params, batch, key, 0)
    terms = rate_distortion.noisy_terms(model, params, batch / 255.0, key)
    rate = (terms.y_bits + terms.z_bits) / (64 * 64)
    distortion = terms.squared_error / (64 * 64 * 3)
    np.testing.assert_allclose(loss, np.mean(rate + 0.01 * distortion), rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr"], 10 * np.log10(255**2 / np.mean(distortion)), rtol=1e-5)
    other, _ = rate_distortion.rate_distortion_loss(model, lmbda=0.01)(params, batch, jax.random.key(5), 0)
    assert other != loss  # the key draws the relaxation's noise


def test_noisy_rate_matches_the_rounded_rate_in_expectation_on_a_smooth_prior(small_codec):
    """E_u[-log2 p(y + u)] with p a discretized Gaussian much wider than a bin is, to a fraction
    of a percent, the rate of the rounded values: the relaxation trains the rate the coder writes."""
    y = jax.random.normal(jax.random.key(0), (20000,)) * 8.0
    noisy = -jnp.log2(entropy_models.gaussian_bin_mass(y + jax.random.uniform(jax.random.key(1), y.shape) - 0.5, 0.0, 8.0))
    rounded = -jnp.log2(entropy_models.gaussian_bin_mass(jnp.round(y), 0.0, 8.0))
    np.testing.assert_allclose(jnp.mean(noisy), jnp.mean(rounded), rtol=5e-3)


def test_generate_draws_images_in_range(small_codec):
    model, params = small_codec
    images = rate_distortion.generate(model, params, jax.random.key(0), num_images=2, image_hw=(64, 128))
    assert images.shape == (2, 64, 128, 3) and float(images.min()) >= 0 and float(images.max()) <= 1
    with pytest.raises(ValueError, match="multiples of 64"):
        rate_distortion.generate(model, params, jax.random.key(0), num_images=1, image_hw=(60, 64))


def test_the_codec_config_is_validated():
    with pytest.raises(config_lib.ConfigError, match="crop_size"):
        config_lib.validate(config_lib.preset("photos-rd-base", {"crop_size": 48}))
    with pytest.raises(config_lib.ConfigError, match="rd_lambda"):
        config_lib.validate(config_lib.preset("photos-rd-base", {"rd_lambda": -1.0}))
