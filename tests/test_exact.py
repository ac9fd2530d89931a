"""The closed forms of vae_jax.exact (the linear-Gaussian VAE's marginal p(x) = N(b, W W^T + s^2 I)),
and every estimator (ELBO, IWAE, the chunked log-likelihood) checked against them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import vae_jax
from vae_jax.networks.activations import soft_clamp, soft_clamp_inverse

DATA_DIM, LATENT_DIM, OBS_VAR = 6, 3, 0.2


def _model_and_params(seed=0, orthogonal=False):
    model = vae_jax.linear_gaussian(DATA_DIM, LATENT_DIM, obs_var=OBS_VAR)
    params = vae_jax.init(model, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DATA_DIM, LATENT_DIM))
    if orthogonal:  # W = Q diag(d): orthogonal columns, so p(z|x) is a diagonal Gaussian.
        q, _ = np.linalg.qr(w)
        w = q * np.array([1.5, 0.8, 0.4])
    params["decoder"]["out"] = {
        "kernel": jnp.asarray(w.T, jnp.float32),
        "bias": jnp.asarray(rng.normal(size=DATA_DIM) * 0.3, jnp.float32),
    }
    return model, params


def _data(n=8, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, DATA_DIM)), jnp.float32)


def test_exact_log_marginal_matches_scipy():
    model, params = _model_and_params()
    x = _data()
    w = np.asarray(params["decoder"]["out"]["kernel"]).T
    b = np.asarray(params["decoder"]["out"]["bias"])
    want = stats.multivariate_normal(b, w @ w.T + OBS_VAR * np.eye(DATA_DIM)).logpdf(np.asarray(x))
    np.testing.assert_allclose(vae_jax.exact_log_marginal(model, params, x), want, rtol=1e-5)
    assert model.likelihood.obs_var == OBS_VAR


@pytest.mark.parametrize("seed", range(3))
def test_elbo_never_exceeds_log_marginal_for_any_encoder(seed):
    model, params = _model_and_params(seed)
    x = _data(seed=seed + 10)
    exact = vae_jax.exact_log_marginal(model, params, x)
    for draw in range(5):
        key = jax.random.key(100 * seed + draw)
        # The analytic-KL ELBO is itself a one-sample estimate; average many draws so the
        # comparison is about the bound, not the noise.
        keys = jax.random.split(key, 400)
        elbos = jax.vmap(lambda k: vae_jax.elbo(model, params, x, k))(keys).mean(0)
        assert np.all(np.asarray(elbos) < np.asarray(exact))


def test_exact_posterior_encoder_attains_the_marginal_sample_by_sample():
    model, params = _model_and_params(orthogonal=True)
    params["encoder"] = vae_jax.optimal_encoder_params(model, params)
    x = _data()
    exact = vae_jax.exact_log_marginal(model, params, x)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        log_w = vae_jax.log_importance_weights(
            model, params64, jnp.asarray(x, jnp.float64), jax.random.key(0), k=200
        )
    # log p(x, z) - log q(z|x) = log p(x) for every z when q is the exact posterior.
    assert np.max(np.abs(np.asarray(log_w) - np.asarray(exact)[:, None])) < 1e-4
    # The analytic-KL ELBO's one-sample reconstruction term is noisy, but unbiased for log p(x).
    elbos = jax.vmap(lambda k: vae_jax.elbo(model, params, x, k))(jax.random.split(jax.random.key(1), 4000))
    standard_error = np.asarray(elbos.std(0)) / np.sqrt(4000)
    assert np.all(np.abs(np.asarray(elbos.mean(0) - exact)) < 4 * standard_error)


def test_optimal_encoder_refuses_a_non_diagonal_posterior():
    model, params = _model_and_params(orthogonal=False)
    with pytest.raises(ValueError, match="not diagonal"):
        vae_jax.optimal_encoder_params(model, params)


def _approximate_posterior_params(model, params):
    """A good but inexact encoder: exact posterior mean, diagonal of the covariance, widened."""
    w = params["decoder"]["out"]["kernel"].T
    b = params["decoder"]["out"]["bias"]
    covariance = jnp.linalg.inv(jnp.eye(LATENT_DIM) + w.T @ w / OBS_VAR)
    gain = w @ covariance / OBS_VAR
    return {
        "mean": {"kernel": gain, "bias": -b @ gain},
        "log_var": {
            "kernel": jnp.zeros_like(gain),
            "bias": soft_clamp_inverse(jnp.log(jnp.diag(covariance)) + 0.3),
        },
    }


def test_log_likelihood_with_large_k_converges_to_the_marginal():
    model, params = _model_and_params(seed=2)
    params["encoder"] = _approximate_posterior_params(model, params)
    x = _data(seed=3)
    exact = vae_jax.exact_log_marginal(model, params, x)
    estimate = vae_jax.log_likelihood(model, params, x, jax.random.key(0), k=5000, chunk_size=500)
    gap = np.asarray(exact - estimate)
    assert np.max(np.abs(gap)) < 0.05
    elbo = vae_jax.elbo(model, params, x, jax.random.key(0))
    assert float(jnp.mean(exact - elbo)) > 0.05  # the encoder really is inexact


def test_bounds_are_ordered_and_below_the_marginal():
    model, params = _model_and_params(seed=4)
    params["encoder"] = _approximate_posterior_params(model, params)
    log_var = soft_clamp(params["encoder"]["log_var"]["bias"])
    params["encoder"]["log_var"]["bias"] = soft_clamp_inverse(log_var - 1.5)  # overconfident q
    x = _data(seed=5)
    exact = float(jnp.mean(vae_jax.exact_log_marginal(model, params, x)))
    keys = jax.random.split(jax.random.key(7), 200)
    mean_over_keys = lambda f: float(jnp.mean(jax.vmap(f)(keys)))
    elbo = mean_over_keys(lambda k: vae_jax.elbo(model, params, x, k))
    iwae5 = mean_over_keys(lambda k: vae_jax.iwae_bound(model, params, x, k, k=5))
    iwae50 = mean_over_keys(lambda k: vae_jax.iwae_bound(model, params, x, k, k=50))
    assert elbo < iwae5 < iwae50 < exact


def test_chunked_log_likelihood_handles_a_ragged_last_chunk():
    model, params = _model_and_params(seed=6)
    params["encoder"] = _approximate_posterior_params(model, params)
    x = _data(n=3, seed=7)
    one_chunk = vae_jax.log_likelihood(model, params, x, jax.random.key(0), k=700, chunk_size=700)
    ragged = vae_jax.log_likelihood(model, params, x, jax.random.key(0), k=700, chunk_size=300)
    exact = vae_jax.exact_log_marginal(model, params, x)
    np.testing.assert_allclose(one_chunk, exact, atol=0.05)
    np.testing.assert_allclose(ragged, exact, atol=0.05)
    # With k = chunk_size the chunked estimator is exactly one IWAE bound on its own draws.
    keys = jax.random.split(jax.random.key(0), 3)
    single = jax.vmap(lambda xi, ki: vae_jax.log_likelihood(model, params, xi, ki, k=700, chunk_size=700))(
        x, keys
    )
    np.testing.assert_allclose(one_chunk, single, rtol=1e-6)


def test_default_chunking_is_even_and_batch_independent():
    """chunk_size=None takes ``evaluation.chunking``'s even split; the batch is evaluated in
    groups, and every example's value is the one it gets alone (same draws)."""
    from vae_jax import batching, evaluation

    model, params = _model_and_params(seed=8)
    params["encoder"] = _approximate_posterior_params(model, params)
    x = _data(n=5, seed=9)
    chunk_size, num_chunks = evaluation.chunking(model, params, k=5000)
    assert chunk_size * num_chunks >= 5000 > chunk_size * (num_chunks - 1)
    assert chunk_size <= batching.samples_per_chunk(model, params)
    key = jax.random.key(1)
    default = vae_jax.log_likelihood(model, params, x, key, k=5000)
    explicit = vae_jax.log_likelihood(model, params, x, key, k=5000, chunk_size=chunk_size)
    np.testing.assert_array_equal(default, explicit)
    alone = [
        vae_jax.log_likelihood(model, params, x[i], k, k=5000) for i, k in enumerate(jax.random.split(key, 5))
    ]
    np.testing.assert_allclose(default, np.stack(alone), rtol=1e-6)  # same draws; matmul shapes differ
    np.testing.assert_allclose(default, vae_jax.exact_log_marginal(model, params, x), atol=0.05)
