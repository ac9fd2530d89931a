"""``compute_dtype="bfloat16"``: parameters stay float32, matmuls and convolutions run in bfloat16,
likelihoods and KLs in float32, and the bound moves by no more than bfloat16's rounding explains.

bfloat16 keeps 8 significand bits (relative rounding 2^-9, about 0.2%); each layer adds such an
error to its activations, so a network of a few layers shifts the decoder's outputs by about a
percent, and the ELBO, a sum of smooth per-pixel terms, by about as much: the tolerance is 2% of
the float32 ELBO per example.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import data_for, perturbed, tiny_conv_config

import vae_jax
from vae_jax import config as config_lib
from vae_jax import configured, training

BFLOAT16_RELATIVE_TOLERANCE = 0.02

CONFIGS = {
    "mlp": dict(model="mlp", hidden=(32,), latent_dim=4, crop_size=8),
    "conv": dict(model="conv", crop_size=16, widths=(8, 16), latent_channels=2),
    "hvae": dict(model="hvae", crop_size=16, widths=(8, 16), latent_channels=2, groups_per_stage=(1, 2)),
}


def _models(name):
    config = tiny_conv_config(**CONFIGS[name])
    shape = (config.crop_size, config.crop_size, 3)
    full = config_lib.build_model(config, shape)
    half = config_lib.build_model(dataclasses.replace(config, compute_dtype="bfloat16"), shape)
    return config, full, half


@pytest.mark.parametrize("name", ["conv", pytest.param("hvae", marks=pytest.mark.slow), "mlp"])
def test_bfloat16_elbo_is_within_its_rounding_of_the_float32_elbo_on_the_same_params(name):
    _, full, half = _models(name)
    params = perturbed(vae_jax.init(full, jax.random.key(0)), 3)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    x = data_for(full, 16)
    key = jax.random.key(1)
    reference = jax.jit(lambda p, x: vae_jax.elbo(full, p, x, key))(params, x)
    value = jax.jit(lambda p, x: vae_jax.elbo(half, p, x, key))(params, x)
    assert value.dtype == jnp.float32  # the bound itself is summed in float32
    assert not np.array_equal(np.asarray(value), np.asarray(reference))  # bfloat16 really ran
    np.testing.assert_allclose(value, reference, rtol=BFLOAT16_RELATIVE_TOLERANCE)


def _fit_one_batch(model, config, batch, steps=40):
    """The losses of ``steps`` train steps on one batch, and the final state."""
    state = configured.init_state(model, config)
    loss_fn, optimizer, options = configured.loss_of(model, config), configured.optimizer_of(config), configured.step_options(config)
    step = jax.jit(lambda s, b: training.train_step(loss_fn, optimizer, s, b, options))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.mark.parametrize("name", ["conv", pytest.param("hvae", marks=pytest.mark.slow)])
def test_bfloat16_training_steps_are_finite_lower_the_loss_and_keep_float32_params(name):
    """Fitting one batch, bfloat16 steps lower the loss by at least half as much as float32 steps
    from the same start (how far one batch's loss falls in 40 steps depends on the model, so the
    float32 run is the yardstick), and the parameters stay float32."""
    config, full, half = _models(name)
    config = dataclasses.replace(config, learning_rate=3e-3, warmup_steps=0)
    batch = configured.open_source(config).train_batch(0, 16, 0)
    drops = {}
    for dtype, model in (("float32", full), ("bfloat16", half)):
        losses, state = _fit_one_batch(model, dataclasses.replace(config, compute_dtype=dtype), batch)
        assert np.all(np.isfinite(losses)) and int(state.skipped) == 0
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state.params))
        drops[dtype] = np.mean(losses[:5]) - np.mean(losses[-5:])
    assert drops["float32"] > 0.02 * abs(np.mean(losses[:5]))
    assert drops["bfloat16"] > 0.5 * drops["float32"]
