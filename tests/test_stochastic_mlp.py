"""Burda et al.'s stacked stochastic layers, the IWAE training objective and the paper's schedule."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import config as config_lib
from vae_jax import images, objectives, training
from vae_jax.stochastic_mlp import stochastic_mlp_vae, with_observation_bias

KEY = jax.random.key(0)
ONE_LAYER = stochastic_mlp_vae((4, 4, 1), widths=(8,), depth=2, latent_sizes=(3,))
TWO_LAYERS = stochastic_mlp_vae((4, 4, 1), widths=(8, 6), depth=2, latent_sizes=(5, 3))


def _binary(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (n, 4, 4, 1)), jnp.float32)


@pytest.mark.parametrize("model", [ONE_LAYER, pytest.param(TWO_LAYERS, marks=pytest.mark.slow)], ids=["one", "two"])
def test_iwae_loss_is_minus_the_bound_and_k1_is_the_sampled_elbo(model):
    params = vae_jax.init(model, KEY)
    batch = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 1)).astype(np.uint8)
    key = jax.random.key(3)
    data_key, bound_key = jax.random.split(key)
    x = images.prepare(batch, "dynamic_binary", data_key)
    step = jnp.int32(0)
    for k in (1, 5):
        loss_fn = training.iwae_loss(model, likelihood_input="dynamic_binary", k=k)
        loss, _ = loss_fn(params, batch, key, step)
        expected = -jnp.mean(vae_jax.iwae_bound(model, params, x, bound_key, k=k))
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # k = 1: log w = log p(x|z) + log p(z) - log q(z|x) at one draw, the ELBO's sampled estimate.
    log_w = vae_jax.log_importance_weights(model, params, x, bound_key, k=1)[:, 0]
    # The bound draws sample i of example e from split(split(key, B)[e], k)[i].
    keys = jax.vmap(lambda k: jax.random.split(k, 1)[0])(jax.random.split(bound_key, 6))
    terms = model.infer(params, x, keys)
    sampled_elbo = objectives.data_log_prob(model, x, terms.decoder_out) + terms.log_p - terms.log_q
    np.testing.assert_allclose(log_w, sampled_elbo, rtol=1e-6)
    loss, _ = training.iwae_loss(model, likelihood_input="dynamic_binary", k=1)(params, batch, key, step)
    np.testing.assert_allclose(loss, -jnp.mean(sampled_elbo), rtol=1e-6)


@pytest.mark.parametrize("model", [ONE_LAYER, pytest.param(TWO_LAYERS, marks=pytest.mark.slow)], ids=["one", "two"])
def test_sampled_kl_elbo_loss_is_the_mean_log_weight_and_the_elbo_in_expectation(model):
    params = vae_jax.init(model, KEY)
    batch = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 1)).astype(np.uint8)
    step = jnp.int32(0)
    key = jax.random.key(3)
    data_key, sample_key = jax.random.split(key)
    x = images.prepare(batch, "dynamic_binary", data_key)
    sampled = {k: training.sampled_elbo_loss(model, likelihood_input="dynamic_binary", k=k) for k in (1, 5)}
    log_w = vae_jax.log_importance_weights(model, params, x, sample_key, k=5)
    np.testing.assert_allclose(sampled[5](params, batch, key, step)[0], -jnp.mean(log_w), rtol=1e-6)
    # k = 1: the IWAE loss at k = 1, draw for draw.
    iwae_1 = training.iwae_loss(model, likelihood_input="dynamic_binary", k=1)
    np.testing.assert_allclose(sampled[1](params, batch, key, step)[0], iwae_1(params, batch, key, step)[0], rtol=1e-6)
    # Over many draws its mean is the closed-form loss's: one objective, two estimates. (Each key
    # binarizes the batch alike for both; the latent draws differ.)
    closed = training.elbo_loss(model, likelihood_input="dynamic_binary")
    keys = jax.random.split(jax.random.key(9), 4000)
    difference = jax.vmap(lambda k: sampled[1](params, batch, k, step)[0] - closed(params, batch, k, step)[0])(keys)
    assert abs(float(jnp.mean(difference))) < 4 * float(jnp.std(difference)) / np.sqrt(len(keys))
    # A loss that dropped log p(z) or log q(z|x) would be off by nats, far outside that.
    assert float(jnp.std(difference)) / np.sqrt(len(keys)) < 0.25


def test_sampled_kl_is_chosen_by_config_and_refuses_what_it_cannot_weight():
    config = config_lib.preset("iwae-mnist-1layer", {"kl_estimate": "sampled"})
    model = config_lib.build_model(config_lib.validate(config), (28, 28, 1))
    params = vae_jax.init(model, KEY)
    batch = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    from vae_jax import configured

    key, step = jax.random.key(1), jnp.int32(0)
    expected = training.sampled_elbo_loss(model, likelihood_input="dynamic_binary")(params, batch, key, step)[0]
    np.testing.assert_allclose(configured.loss_of(model, config)(params, batch, key, step)[0], expected, rtol=1e-6)
    for overrides in ({"objective": "iwae"}, {"free_bits": 1.0}, {"kl_warmup_steps": 10}):
        with pytest.raises(config_lib.ConfigError, match="kl_estimate"):
            config_lib.validate(config_lib.preset("iwae-mnist-1layer", {"kl_estimate": "sampled", **overrides}))


def test_two_layer_log_weights_add_up_layer_by_layer():
    """log w = log p(x|z_1) + log p(z_1|z_2) + log p(z_2) - log q(z_1|x) - log q(z_2|z_1), each
    term recomputed here from the networks' Gaussians."""
    model, x = TWO_LAYERS, _binary(3)
    params = vae_jax.init(model, KEY)
    keys = jax.random.split(jax.random.key(5), 3)
    terms = model.infer(params, x, keys)
    (m1, v1), (m2, v2) = model.posterior_path(params, x, keys)
    eps1 = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (5,)))(keys)
    eps2 = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (3,)))(keys)
    z1, z2 = m1 + jnp.exp(v1 / 2) * eps1, m2 + jnp.exp(v2 / 2) * eps2

    def log_normal(z, mean, log_var):
        return jnp.sum(-0.5 * (jnp.log(2 * jnp.pi) + log_var + (z - mean) ** 2 / jnp.exp(log_var)), -1)

    p_mean, p_log_var = model._p(params, 0, z2)
    log_q = log_normal(z1, m1, v1) + log_normal(z2, m2, v2)
    log_p = log_normal(z1, p_mean, p_log_var) + log_normal(z2, 0.0, 0.0)
    np.testing.assert_allclose(terms.log_q, log_q, rtol=1e-5)
    np.testing.assert_allclose(terms.log_p, log_p, rtol=1e-5)
    # KL groups, top first: z_2's analytic KL given z_1, then z_1's sampled log q - log p.
    np.testing.assert_allclose(terms.kl_groups[1], log_normal(z1, m1, v1) - log_normal(z1, p_mean, p_log_var), rtol=1e-5)


def test_paper_presets_are_the_paper_models():
    for name, sizes, widths in (("iwae-mnist-1layer", (50,), (200,)), ("iwae-mnist-2layer", (100, 50), (200, 100))):
        config = config_lib.preset(name)
        assert (config.batch_size, config.adam_eps, config.adam_b1, config.adam_b2) == (20, 1e-4, 0.9, 0.999)
        assert config.steps == 3280 * 3000 and config.lr_schedule == "burda"
        model = config_lib.build_model(config, (28, 28, 1))
        params = vae_jax.init(model, KEY)
        assert model.latent_sizes == sizes
        # Glorot uniform: every kernel inside +-sqrt(6 / (fan_in + fan_out)).
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if "kernel" in jax.tree_util.keystr(path):
                bound = np.sqrt(6 / sum(leaf.shape))
                assert 0.95 * bound < np.abs(leaf).max() <= bound * (1 + 1e-6)
        assert params["encoder"]["q_1"]["hidden_0"]["kernel"].shape == (784, widths[0])
        assert params["encoder"]["q_1"]["hidden_1"]["kernel"].shape == (widths[0], widths[0])


def test_output_bias_starts_at_the_logit_of_the_pixel_means():
    params = vae_jax.init(ONE_LAYER, KEY)
    means = np.linspace(0.0, 1.0, 16)
    bias = with_observation_bias(ONE_LAYER, params, means)["decoder"]["x"]["out"]["bias"]
    clipped = np.clip(means, 0.001, 0.999)
    np.testing.assert_allclose(bias, np.log(clipped / (1 - clipped)), rtol=1e-5)
    with pytest.raises(ValueError, match="data_mean needs a Bernoulli likelihood"):
        with_observation_bias(dataclasses.replace(ONE_LAYER, likelihood=vae_jax.Gaussian()), params, means)
