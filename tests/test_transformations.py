"""jit, vmap, grad and PRNG behaviour of the public functions on every model family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax

MODELS = {
    "mlp_bernoulli": lambda: vae_jax.mlp_vae((6, 6, 1), (16,), 4),
    "mlp_gaussian_learned": lambda: vae_jax.mlp_vae((6, 6, 1), (16,), 4, likelihood=vae_jax.Gaussian()),
    "conv_mixture": lambda: vae_jax.conv_vae(
        (8, 8, 3), (8, 16), 1, 2, likelihood=vae_jax.DiscretizedLogisticMixture(3)
    ),
}


def _data(model, n, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, *model.data_shape)
    kind = model.likelihood.input_kind
    if kind == "binary":
        return jnp.asarray(rng.integers(0, 2, shape), jnp.float32)
    if kind == "unit":
        return jnp.asarray(rng.uniform(size=shape), jnp.float32)
    return jnp.asarray(rng.integers(0, 256, shape), jnp.int32)


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request):
    model = MODELS[request.param]()
    return model, vae_jax.init(model, jax.random.key(0)), _data(model, 4)


def _functions(model, params):
    return {
        "elbo": lambda x, k: vae_jax.elbo(model, params, x, k),
        "iwae": lambda x, k: vae_jax.iwae_bound(model, params, x, k, k=3),
        "log_likelihood": lambda x, k: vae_jax.log_likelihood(model, params, x, k, k=6, chunk_size=4),
    }


def test_jit_equals_no_jit(setup):
    model, params, x = setup
    key = jax.random.key(1)
    for name, f in _functions(model, params).items():
        np.testing.assert_allclose(jax.jit(f)(x, key), f(x, key), rtol=2e-5, atol=1e-3, err_msg=name)


def test_vmap_over_single_examples_equals_the_batched_call(setup):
    model, params, x = setup
    key = jax.random.key(2)
    keys = jax.random.split(key, x.shape[0])
    for name, f in _functions(model, params).items():
        batched = f(x, key)
        assert batched.shape == (x.shape[0],), name
        np.testing.assert_allclose(jax.vmap(f)(x, keys), batched, rtol=2e-5, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(f(x[1], keys[1]), batched[1], rtol=2e-5, atol=1e-3, err_msg=name)
    mean, _ = vae_jax.encode(model, params, x)
    single_mean, _ = vae_jax.encode(model, params, x[0])
    assert mean.shape == (x.shape[0], *model.latent_shape)
    np.testing.assert_allclose(single_mean, mean[0], rtol=1e-5, atol=1e-5)
    out = vae_jax.decode(model, params, mean)
    assert out.shape == (x.shape[0], *model.data_shape, model.likelihood.params_per_subpixel)


def test_same_key_is_bit_identical_and_different_keys_differ(setup):
    model, params, x = setup
    for name, f in _functions(model, params).items():
        a = np.asarray(f(x, jax.random.key(5)))
        b = np.asarray(f(x, jax.random.key(5)))
        c = np.asarray(f(x, jax.random.key(6)))
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, c), name
    s1 = vae_jax.sample(model, params, jax.random.key(3), 4)
    s2 = vae_jax.sample(model, params, jax.random.key(3), 4)
    s3 = vae_jax.sample(model, params, jax.random.key(4), 4)
    assert s1.shape == (4, *model.data_shape)
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)


def test_grad_of_elbo_matches_finite_differences():
    model = vae_jax.mlp_vae(
        (5,), (7,), 3, likelihood=vae_jax.Gaussian(0.3), activation="tanh", dtype=jnp.float64
    )
    key = jax.random.key(0)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 5)))
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), vae_jax.init(model, key))
        loss = lambda p: -jnp.mean(vae_jax.elbo(model, p, x, key))  # fixed key: a deterministic function
        grads = jax.grad(loss)(params)
        direction = jax.tree_util.tree_map(
            lambda a: jnp.asarray(np.random.default_rng(1).normal(size=a.shape)), params
        )
        eps = 1e-6
        shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)
        numerical = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction))
        )
        assert float(analytic) == pytest.approx(float(numerical), rel=1e-6)


def test_temperature_zero_samples_decode_the_prior_mean():
    model = MODELS["mlp_gaussian_learned"]()
    params = vae_jax.init(model, jax.random.key(0))
    means = vae_jax.sample(model, params, jax.random.key(1), 3, temperature=0.0, return_mean=True)
    at_zero = model.likelihood.mean(vae_jax.decode(model, params, jnp.zeros((3, 4))))
    np.testing.assert_allclose(means, at_zero, rtol=1e-6)


def test_beta_and_free_bits_change_only_the_kl_term():
    model = MODELS["mlp_bernoulli"]()
    params = vae_jax.init(model, jax.random.key(0))
    x, key = _data(model, 4), jax.random.key(1)
    terms = vae_jax.elbo_terms(model, params, x, key)
    np.testing.assert_allclose(
        vae_jax.elbo(model, params, x, key), terms.reconstruction - terms.kl, rtol=1e-6
    )
    np.testing.assert_allclose(
        vae_jax.elbo(model, params, x, key, beta=0.5), terms.reconstruction - 0.5 * terms.kl, rtol=1e-6
    )
    floor = float(terms.kl.max()) + 1.0
    np.testing.assert_allclose(
        vae_jax.elbo(model, params, x, key, free_bits=floor), terms.reconstruction - floor, rtol=1e-6
    )
