"""vae_jax.checks at the public functions: bad input raises a clear error naming the argument, the
expected and the received, eagerly and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def mlp():
    model = vae_jax.mlp_vae((4, 4, 1), hidden=(8,), latent_dim=2)
    return model, vae_jax.init(model, KEY)


@pytest.fixture(scope="module")
def discrete():
    model = vae_jax.mlp_vae((4, 4, 3), hidden=(8,), latent_dim=2, likelihood=vae_jax.DiscretizedLogisticMixture(2))
    return model, vae_jax.init(model, KEY)


def test_wrong_rank_or_shape(mlp):
    model, params = mlp
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 4, 1\).*got \(16,\)"):
        vae_jax.elbo(model, params, jnp.zeros(16), KEY)
    with pytest.raises(ValueError, match=r"got \(2, 3, 4, 4, 1\)"):
        vae_jax.elbo(model, params, jnp.zeros((2, 3, 4, 4, 1)), KEY)
    with pytest.raises(ValueError, match=r"got \(2, 4, 4, 3\)"):
        vae_jax.iwae_bound(model, params, jnp.zeros((2, 4, 4, 3)), KEY)
    with pytest.raises(ValueError, match=r"z: expected shape \(2,\)"):
        vae_jax.decode(model, params, jnp.zeros((3, 5)))


def test_wrong_dtype(mlp):
    model, params = mlp
    with pytest.raises(ValueError, match="x: expected a float array.*got dtype uint8.*prepare"):
        vae_jax.elbo(model, params, np.zeros((2, 4, 4, 1), np.uint8), KEY)


def test_values_out_of_range(mlp, discrete):
    model, params = mlp
    with pytest.raises(ValueError, match=r"x: expected values in \{0, 1\}, got values in \[0, 0.5\]"):
        vae_jax.elbo(model, params, jnp.full((2, 4, 4, 1), 0.5).at[0].set(0.0), KEY)
    model, params = discrete
    with pytest.raises(ValueError, match=r"integer values in 0..255, got values in \[0, 256\]"):
        vae_jax.log_likelihood(model, params, jnp.full((1, 4, 4, 3), 256).at[0, 0].set(0), KEY, k=2)
    with pytest.raises(ValueError, match="integer values in 0..255"):
        vae_jax.elbo(model, params, jnp.full((4, 4, 3), 3.5), KEY)
    with pytest.raises(ValueError, match="non-finite"):
        vae_jax.elbo(model, params, jnp.full((4, 4, 3), jnp.nan), KEY)
    unit = vae_jax.mlp_vae((3,), hidden=(), latent_dim=1, likelihood=vae_jax.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got values in \[-1, 2\]"):
        vae_jax.elbo(unit, vae_jax.init(unit, KEY), jnp.array([-1.0, 0.0, 2.0]), KEY)


def test_the_linear_gaussian_model_takes_real_data_and_matches_its_closed_form():
    model = vae_jax.linear_gaussian(3, 1)
    params = vae_jax.init(model, KEY)
    x = jnp.array([[-1.0, 0.0, 2.0], [3.5, -2.25, 0.5]])
    exact = vae_jax.exact_log_marginal(model, params, x)
    encoder = vae_jax.optimal_encoder_params(model, params)
    # With the exact posterior every importance weight equals p(x).
    log_w = vae_jax.log_importance_weights(model, {**params, "encoder": encoder}, x, KEY, k=3)
    np.testing.assert_allclose(log_w, np.repeat(np.asarray(exact)[:, None], 3, axis=1), rtol=1e-5)


def test_bad_key_and_counts(mlp):
    model, params = mlp
    x = jnp.zeros((2, 4, 4, 1))
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        vae_jax.elbo(model, params, x, 0)
    with pytest.raises(ValueError, match="key: expected a single PRNG key"):
        vae_jax.elbo(model, params, x, jax.random.split(KEY, 2))
    with pytest.raises(ValueError, match="k: expected an integer >= 1, got 0"):
        vae_jax.iwae_bound(model, params, x, KEY, k=0)
    with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
        vae_jax.log_likelihood(model, params, x, KEY, k=10, chunk_size=-1)
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1"):
        vae_jax.sample(model, params, KEY, num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        vae_jax.sample(model, params, KEY, num_samples=2, temperature=-1.0)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature: expected a finite non-negative number"):
            vae_jax.sample(model, params, KEY, num_samples=2, temperature=bad)
    with pytest.raises(ValueError, match=r"key: expected a PRNG key.*got str 'abc'"):
        vae_jax.elbo(model, params, x, "abc")


def test_an_empty_batch_is_refused_eagerly_and_under_jit(mlp):
    model, params = mlp
    empty = jnp.zeros((0, 4, 4, 1))
    message = r"x: got an empty batch of shape \(0, 4, 4, 1\)"
    with pytest.raises(ValueError, match=message):
        vae_jax.elbo(model, params, empty, KEY)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda p, x: vae_jax.iwae_bound(model, p, x, KEY, k=3))(params, empty)


def test_iwae_bound_of_a_large_batch_is_evaluated_in_groups(mlp, monkeypatch):
    """Grouping (forced here with a tiny budget) changes neither the values nor their keys."""
    from vae_jax import batching

    model, params = mlp
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (7, 4, 4, 1)), jnp.float32)
    whole = vae_jax.iwae_bound(model, params, x, KEY, k=4)
    calls = []
    real_map = batching.map_in_groups
    monkeypatch.setattr(batching, "samples_per_chunk", lambda model, params: 8)  # 2 examples a group
    monkeypatch.setattr(batching, "map_in_groups", lambda fn, a, g: calls.append(g) or real_map(fn, a, g))
    grouped = vae_jax.iwae_bound(model, params, x, KEY, k=4)
    assert calls == [2]
    np.testing.assert_allclose(grouped, whole, rtol=1e-6)


def test_models_that_do_not_fit_are_refused_at_construction():
    with pytest.raises(ValueError, match="divisible"):
        vae_jax.conv_vae((30, 30, 3), widths=(8, 16, 32))
    with pytest.raises(ValueError, match="activation"):
        vae_jax.init(
            vae_jax.mlp_vae((4,), hidden=(3,), latent_dim=2, activation="relux", likelihood=vae_jax.Gaussian(1.0)), KEY
        )
    with pytest.raises(ValueError, match="num_components"):
        vae_jax.DiscretizedLogisticMixture(0)
