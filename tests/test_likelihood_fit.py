"""output_bias="fit": the least-squares context predictor, and the decoder bias that makes each
likelihood that predictor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import config as config_lib
from vae_jax import configured, likelihood_fit, warm_start
from vae_jax.likelihoods import (
    CAUSAL_NEIGHBOURS,
    CoupledLogisticMixture,
    CrossChannelLocalMixture,
    DiscretizedLogisticMixture,
    LocalAutoregressiveMixture,
    MIN_LOGISTIC_LOG_SCALE,
)

from conftest import tiny_conv_config

LEFT, UP = 0.55, 0.35  # the field's true coefficients on its left and upper neighbours
NOISE_SCALE = 6.0 / 127.5  # a logistic of 6 levels, in bin-centre units


def autoregressive_images(count=48, size=24, seed=0):
    """8-bit RGB images whose R and G follow x_ij = LEFT x_i,j-1 + UP x_i-1,j + logistic noise
    (0 outside the image, in bin-centre units) and whose B copies R exactly."""
    rng = np.random.default_rng(seed)
    field = np.zeros((count, size + 1, size + 1, 2))
    noise = rng.logistic(0.0, NOISE_SCALE, field.shape)
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            field[:, i, j] = LEFT * field[:, i, j - 1] + UP * field[:, i - 1, j] + noise[:, i, j]
    levels = np.clip(np.round((field[:, 1:, 1:] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    assert np.mean((levels == 0) | (levels == 255)) < 1e-3  # clipping would bias the fit
    return np.concatenate([levels, levels[..., :1]], axis=-1)


def test_the_fit_recovers_a_linear_autoregressive_field():
    fit = likelihood_fit.fit_context(autoregressive_images(), neighbours=True, previous_channels=True)
    left, up = CAUSAL_NEIGHBOURS.index((0, -1)), CAUSAL_NEIGHBOURS.index((-1, 0))
    for channel in (0, 1):
        expected = np.zeros(len(CAUSAL_NEIGHBOURS))
        expected[left], expected[up] = LEFT, UP
        np.testing.assert_allclose(fit.neighbours[:, channel], expected, atol=0.02)
        # E|e| of a logistic is 2 s ln 2; rounding to 8 bits adds a little.
        np.testing.assert_allclose(np.exp(fit.log_scales[channel]), NOISE_SCALE, rtol=0.05)
    np.testing.assert_allclose(fit.offsets, 0.0, atol=0.01)
    # G is independent of R; B is R exactly: its residual is nothing, floored at a tenth of a bin.
    assert abs(fit.previous[1, 0]) < 0.02
    np.testing.assert_allclose(fit.previous[2], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.exp(fit.log_scales[2]), 0.1 / 255 / (2 * np.log(2)), rtol=1e-6)
    # Without the context the predictor is the channel mean.
    plain = likelihood_fit.fit_context(autoregressive_images(), neighbours=False, previous_channels=False)
    assert np.all(plain.neighbours == 0) and np.all(plain.previous == 0)


def _fitted_out(likelihood, images):
    bias = likelihood_fit.fitted_output_bias(likelihood, images)
    assert bias.shape == (likelihood.params_shape(images.shape[1:])[-1],)
    return bias, jnp.broadcast_to(jnp.asarray(bias, jnp.float32), (*images.shape[:-1], bias.size))


def _spread(log_scales, k):
    """The components' log-scales as the likelihood reads them (clipped at its minimum)."""
    spread = log_scales[:, None] + (np.arange(k) - (k - 1) / 2) * likelihood_fit.COMPONENT_LOG_SCALE_SPREAD
    return np.maximum(spread, MIN_LOGISTIC_LOG_SCALE)


def test_the_local_mixture_starts_as_the_fitted_predictor_in_every_component():
    images = autoregressive_images(count=8, size=12)
    likelihood = LocalAutoregressiveMixture(3)
    fit = likelihood_fit.fit_context(images, neighbours=True, previous_channels=True)
    _, out = _fitted_out(likelihood, images)
    logits, means, log_scales, coupling = likelihood._split(likelihood.as_coupled(images, out))
    # The predictor, written out from the fit with the neighbours' bin centres by hand.
    x = 2.0 * images.astype(np.float64) / 255.0 - 1.0
    padded = np.pad(x, ((0, 0), (1, 0), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    around = np.stack([padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in CAUSAL_NEIGHBOURS], -1)
    predicted = fit.offsets + np.einsum("nhwcj,jc->nhwc", around, fit.neighbours)
    for k in range(3):
        np.testing.assert_allclose(means[..., k], predicted, atol=1e-5)
    np.testing.assert_array_equal(logits, 0.0)
    np.testing.assert_allclose(log_scales[0, 0, 0], _spread(fit.log_scales, 3), atol=1e-5)
    # alpha (G on R), beta (B on R), gamma (B on G): B copies R, clipped to tanh's reach.
    np.testing.assert_allclose(coupling[0, 0, 0, :, 0], [fit.previous[1, 0], likelihood_fit.MAX_COEFFICIENT, 0.0], atol=1e-5)


def cross_channel_images(count=32, size=20, seed=1):
    """R the autoregressive field above; G = 0.6 R(left) + 0.3 R(up) + noise; B = 0.5 G(up) -
    0.4 R(up-left) + noise (0 outside the image, bin-centre units): G and B read only the earlier
    channels' neighbours."""
    rng = np.random.default_rng(seed)
    red = 2.0 * autoregressive_images(count, size, seed)[..., 0].astype(np.float64) / 255.0 - 1.0
    padded = lambda a: np.pad(a, ((0, 0), (1, 0), (1, 1)))
    at = lambda a, dy, dx: padded(a)[:, 1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size]
    green = 0.6 * at(red, 0, -1) + 0.3 * at(red, -1, 0) + rng.logistic(0.0, NOISE_SCALE, red.shape)
    blue = 0.5 * at(green, -1, 0) - 0.4 * at(red, -1, -1) + rng.logistic(0.0, NOISE_SCALE, red.shape)
    levels = np.clip(np.round((np.stack([red, green, blue], -1) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    assert np.mean((levels == 0) | (levels == 255)) < 1e-3
    return levels


def test_the_cross_channel_fit_recovers_the_earlier_channels_neighbours_and_starts_there():
    images = cross_channel_images()
    fit = likelihood_fit.fit_context(images, neighbours=True, previous_channels=True, cross_channel=True)
    left, up, up_left = (CAUSAL_NEIGHBOURS.index(offset) for offset in [(0, -1), (-1, 0), (-1, -1)])
    want = np.zeros((len(CAUSAL_NEIGHBOURS), 3))  # (neighbour, pair G<-R, B<-R, B<-G)
    want[left, 0], want[up, 0], want[up_left, 1], want[up, 2] = 0.6, 0.3, -0.4, 0.5
    np.testing.assert_allclose(fit.cross, want, atol=0.03)
    np.testing.assert_allclose(fit.neighbours[:, 1:], 0.0, atol=0.03)  # G and B do not read their own neighbours
    np.testing.assert_allclose(fit.previous[1:, :2][np.tril_indices(2)], 0.0, atol=0.03)
    np.testing.assert_allclose(np.exp(fit.log_scales[1:]), NOISE_SCALE, rtol=0.08)
    # Without the cross terms the same images cost more: G's residual is larger.
    local = likelihood_fit.fit_context(images, neighbours=True, previous_channels=True)
    assert local.log_scales[1] > fit.log_scales[1] + 0.1  # measured 0.18 (R is smooth: G ~ 0.9 R does part)

    # Under the fitted bias every component's means are that predictor, written out by hand.
    likelihood = CrossChannelLocalMixture(2)
    _, out = _fitted_out(likelihood, images)
    _, means, _, _ = likelihood._split(likelihood.as_coupled(images, out))
    x = 2.0 * images.astype(np.float64) / 255.0 - 1.0
    padded = np.pad(x, ((0, 0), (1, 0), (1, 1), (0, 0)))
    around = np.stack([padded[:, 1 + dy : 1 + dy + 20, 1 + dx : 1 + dx + 20] for dy, dx in CAUSAL_NEIGHBOURS], -1)
    predicted = fit.offsets + np.einsum("nhwcj,jc->nhwc", around, fit.neighbours)
    predicted[..., 1] += around[..., 0, :] @ fit.cross[:, 0]
    predicted[..., 2] += around[..., 0, :] @ fit.cross[:, 1] + around[..., 1, :] @ fit.cross[:, 2]
    for k in range(2):
        np.testing.assert_allclose(means[..., k], predicted, atol=1e-5)
    with pytest.raises(ValueError, match="cross_channel"):
        likelihood_fit.fit_context(images, neighbours=False, previous_channels=True, cross_channel=True)


def test_the_coupled_and_independent_mixtures_start_at_the_channel_fits():
    images = autoregressive_images(count=8, size=12)
    fit = likelihood_fit.fit_context(images, neighbours=False, previous_channels=True)
    coupled = CoupledLogisticMixture(2)
    _, out = _fitted_out(coupled, images)
    _, means, log_scales, coupling = coupled._split(out[0, 0, 0])
    np.testing.assert_allclose(means, np.repeat(fit.offsets[:, None], 2, 1), atol=1e-6)
    np.testing.assert_allclose(log_scales, _spread(fit.log_scales, 2), atol=1e-5)
    np.testing.assert_allclose(coupling[:, 0], np.tanh(np.arctanh(np.clip([fit.previous[1, 0], fit.previous[2, 0], fit.previous[2, 1]], -0.95, 0.95))), atol=1e-6)

    plain = likelihood_fit.fit_context(images, neighbours=False, previous_channels=False)
    independent = DiscretizedLogisticMixture(4)
    bias = likelihood_fit.fitted_output_bias(independent, images)
    logits, means, log_scales = independent._split(jnp.asarray(bias.reshape(3, 12), jnp.float32))
    np.testing.assert_array_equal(logits, 0.0)
    np.testing.assert_allclose(means, np.repeat(plain.offsets[:, None], 4, 1), atol=1e-6)
    np.testing.assert_allclose(log_scales, _spread(plain.log_scales, 4), atol=1e-5)
    np.testing.assert_allclose(np.mean(means[:, 0]), np.mean(2.0 * images / 255.0 - 1.0), atol=1e-5)


def test_a_fitted_conv_decoder_starts_at_the_fit_for_any_latent():
    config = tiny_conv_config(likelihood="local", output_bias="fit", patch_size=2)
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    state = warm_start.initial_state(model, config, source)
    crops = np.asarray(source.train_batches(0, warm_start.FIT_BATCHES, config.batch_size, config.seed))
    bias = likelihood_fit.fitted_output_bias(model.likelihood, crops.reshape(-1, *crops.shape[2:]))
    out = state.params["decoder"]["out"]
    np.testing.assert_allclose(out["bias"], np.tile(bias, 4), rtol=1e-6)  # one copy per pixel of a 2x2 patch
    plain = configured.init_state(model, config)
    np.testing.assert_allclose(out["kernel"], plain.params["decoder"]["out"]["kernel"] * likelihood_fit.OUTPUT_KERNEL_SCALE)
    # Every other parameter is the seed's.
    rest = lambda params: {k: v for k, v in params.items() if k != "decoder"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, rest(state.params), rest(plain.params))


def test_the_likelihoods_without_context_start_at_the_channel_statistics():
    images = autoregressive_images(count=8, size=12)
    intensity = images / 255.0
    logits = likelihood_fit.fitted_output_bias(vae_jax.Bernoulli(), images)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), intensity.mean(axis=(0, 1, 2)), rtol=1e-9)
    values = (images + 0.5) / 256.0
    gaussian = likelihood_fit.fitted_output_bias(vae_jax.Gaussian(), images).reshape(3, 2)
    np.testing.assert_allclose(gaussian[:, 0], values.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(np.exp(gaussian[:, 1]), values.var(axis=(0, 1, 2)) + 1 / (12 * 256**2), rtol=1e-9)
    fixed = likelihood_fit.fitted_output_bias(vae_jax.Gaussian(0.05), images)
    np.testing.assert_allclose(fixed, values.mean(axis=(0, 1, 2)), rtol=1e-9)
    logistic = likelihood_fit.fitted_output_bias(vae_jax.DiscretizedLogistic(), images).reshape(3, 2)
    plain = likelihood_fit.fit_context(images, neighbours=False, previous_channels=False)
    np.testing.assert_allclose(logistic, np.stack([plain.offsets, plain.log_scales], 1))


@pytest.mark.parametrize("model", ["mlp", "stochastic_mlp"])
def test_dense_decoders_start_at_the_fit_in_every_pixel(model):
    overrides = dict(likelihood="dlm", mixture_components=2)
    if model == "stochastic_mlp":
        overrides.update(model=model, widths=(8,), latent_sizes=(3,), crop_size=8)
    else:
        overrides.update(model=model, hidden=(8,), latent_dim=2, crop_size=8)
    config = tiny_conv_config(output_bias="fit", **overrides)
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    state = warm_start.initial_state(model, config, source)
    crops = np.asarray(source.train_batches(0, warm_start.FIT_BATCHES, config.batch_size, config.seed))
    bias = likelihood_fit.fitted_output_bias(model.likelihood, crops.reshape(-1, *crops.shape[2:]))
    layer = state.params["decoder"].get("x", state.params["decoder"])["out"]
    np.testing.assert_allclose(layer["bias"], np.tile(bias, 8 * 8), rtol=1e-6)


def test_fit_refuses_what_it_cannot_fit():
    images = autoregressive_images(count=2, size=4)
    with pytest.raises(ValueError, match="output_bias: 'fit' has no fit for the likelihood"):
        likelihood_fit.fitted_output_bias(object(), images)
    with pytest.raises(ValueError, match="output_bias: 'fit' needs a decoder"):
        likelihood_fit.with_output_bias({"encoder": {}}, np.zeros(3))
    with pytest.raises(ValueError, match="do not tile"):
        likelihood_fit.with_output_bias({"decoder": {"out": {"bias": np.zeros(10), "kernel": np.zeros((2, 10))}}}, np.zeros(3))


def test_fit_refuses_images_that_are_not_8_bit():
    with pytest.raises(ValueError, match="8-bit integers"):
        likelihood_fit.fit_context(np.full((2, 4, 4, 3), 0.5), neighbours=True, previous_channels=True)
    with pytest.raises(ValueError, match="non-empty"):
        likelihood_fit.fit_context(np.zeros((0, 4, 4, 3), np.uint8), neighbours=True, previous_channels=True)
