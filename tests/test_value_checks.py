"""Data values are checked eagerly and under jit, vmap and jit(vmap) alike (vae_jax.checks), the
switch turns the checks off, and valid data give the same ELBO, bit for bit, with and without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import checks, training

KEY = jax.random.key(0)

# input kind -> (model, valid data, out-of-range data and the message it gets)
KINDS = {
    "binary": (
        lambda: vae_jax.mlp_vae((2, 2, 1), hidden=(4,), latent_dim=2),
        np.array([[0, 1], [1, 0]], np.float32)[..., None],
        [(255.0, r"x: expected values in \{0, 1\}, got values in \[0, 255\]"),  # x * 255 of 8-bit data
         (0.5, r"x: expected values in \{0, 1\}, got values in \[0, 1\]")],  # fmt: skip
    ),
    "unit": (
        lambda: vae_jax.mlp_vae((2, 2, 1), hidden=(4,), latent_dim=2, likelihood=vae_jax.Gaussian(0.1)),
        np.array([[0.0, 0.25], [1.0, 0.5]], np.float32)[..., None],
        [(255.0, r"x: expected values in \[0, 1\], got values in \[0, 255\]"),
         (-1.0, r"x: expected values in \[0, 1\], got values in \[-1, 1\]")],  # fmt: skip
    ),
    "discrete": (
        lambda: vae_jax.mlp_vae((2, 2, 1), hidden=(4,), latent_dim=2, likelihood=vae_jax.DiscretizedLogistic()),
        np.array([[0, 17], [255, 128]], np.float32)[..., None],
        [(256.0, r"x: expected integer values in 0..255, got values in \[0, 256\]"),
         (-1.0, r"x: expected integer values in 0..255, got values in \[-1, 255\]"),
         (0.5, r"x: expected integer values in 0..255, got values in \[0, 255\]"),
         (np.nan, r"x: expected finite integer values in 0\.\.255, got non-finite values")],  # fmt: skip
    ),
}


def batch_with(x, value=None):
    batch = np.stack([x, x, x]).astype(np.float32)
    if value is not None:
        batch[1, 0, 0, 0] = value
    return jnp.asarray(batch)


def eager(model, params, x, keys):
    return vae_jax.elbo(model, params, x, KEY)


def jitted(model, params, x, keys):
    return jax.jit(vae_jax.elbo, static_argnums=0)(model, params, x, KEY)


def vmapped(model, params, x, keys):
    return jax.vmap(lambda xi, key: vae_jax.elbo(model, params, xi, key))(x, keys)


def jit_of_vmap(model, params, x, keys):
    return jax.jit(lambda p, x, keys: vmapped(model, p, x, keys))(params, x, keys)


TRANSFORMS = {"eager": eager, "jit": jitted, "vmap": vmapped, "jit_vmap": jit_of_vmap}


@pytest.fixture(scope="module")
def models():
    built = {}
    for kind, (build, _, _) in KINDS.items():
        model = build()
        built[kind] = (model, vae_jax.init(model, KEY))
    return built


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_values_raise_under_every_transformation(models, kind, transform):
    model, params = models[kind]
    _, x, bad_values = KINDS[kind]
    assert model.likelihood.input_kind == kind
    keys = jax.random.split(KEY, 3)
    run = TRANSFORMS[transform]
    for value, message in bad_values:
        # Eagerly a ValueError; from a compiled program the runtime's error, ending in that text.
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=message):
            jax.block_until_ready(run(model, params, batch_with(x, value), keys))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_off_switch_lets_bad_values_through_and_valid_data_give_the_same_elbo(models, kind, transform):
    model, params = models[kind]
    _, x, bad_values = KINDS[kind]
    keys = jax.random.split(KEY, 3)
    run = TRANSFORMS[transform]
    checked = run(model, params, batch_with(x), keys)
    with checks.value_checks("off"):
        assert checks.value_checks_mode() == "off"
        unchecked = run(model, params, batch_with(x), keys)
        for value, _ in bad_values:
            jax.block_until_ready(run(model, params, batch_with(x, value), keys))
    assert checks.value_checks_mode() == "always"
    np.testing.assert_array_equal(np.asarray(checked), np.asarray(unchecked))
    assert np.all(np.isfinite(checked))


def test_eager_mode_checks_concrete_values_only(models):
    model, params = models["binary"]
    _, x, _ = KINDS["binary"]
    bad = batch_with(x, 0.5)
    previous = checks.set_value_checks("eager")
    try:
        with pytest.raises(ValueError, match=r"x: expected values in \{0, 1\}"):
            vae_jax.elbo(model, params, bad, KEY)
        jax.block_until_ready(jitted(model, params, bad, None))  # traced: unchecked
    finally:
        checks.set_value_checks(previous)
    with pytest.raises(ValueError, match=r"mode: expected one of \('off', 'eager', 'always'\), got 'sometimes'"):
        checks.set_value_checks("sometimes")


def test_bad_values_raise_under_grad_and_in_the_estimators(models):
    model, params = models["discrete"]
    _, x, _ = KINDS["discrete"]
    bad = batch_with(x, 300.0)
    message = r"x: expected integer values in 0..255, got values in \[0, 300\]"
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(vae_jax.elbo(model, p, x, KEY))))
    iwae = jax.jit(lambda p, x: vae_jax.iwae_bound(model, p, x, KEY, k=2))
    log_likelihood = jax.jit(lambda p, x: vae_jax.log_likelihood(model, p, x, KEY, k=2))
    for fn in (grad, iwae, log_likelihood):
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=message):
            jax.block_until_ready(fn(params, bad))


def test_the_training_losses_trace_no_value_check(models):
    """Their data come from prepare, valid by construction: no callback (a host round trip per
    step off CPU) in the step, while a jitted elbo of the same data has one."""
    model, params = models["binary"]
    batch = jnp.zeros((3, 2, 2, 1), jnp.uint8)
    loss = training.elbo_loss(model, likelihood_input="static_binary")
    assert "callback" not in str(jax.make_jaxpr(loss)(params, batch, KEY, jnp.int32(0)))
    x = batch.astype(jnp.float32)
    assert "callback" in str(jax.make_jaxpr(lambda p, x: vae_jax.elbo(model, p, x, KEY))(params, x))
