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


BUILDS_THAT_INIT_CANNOT_BUILD = [
    (lambda: vae_jax.conv_vae((8, 8, 3), widths=()), r"widths: expected a non-empty tuple of integers >= 1, got \(\)"),
    (lambda: vae_jax.conv_vae((8, 8, 3), widths=(8, 0)), r"widths: expected .* got \(8, 0\)"),
    (lambda: vae_jax.conv_vae((8, 8, 3), widths=(8,), latent_channels=0), "latent_channels: expected an integer >= 1, got 0"),
    (lambda: vae_jax.conv_vae((8, 8, 3), widths=(8,), blocks_per_stage=-1), "blocks_per_stage: expected an integer >= 0, got -1"),
    (lambda: vae_jax.conv_vae((8, 8), widths=(8,)), r"data_shape: expected \(height, width, channels\), got \(8, 8\)"),
    (lambda: vae_jax.conv_vae((8, 8, 0), widths=(8,)), r"data_shape: expected .* >= 1, got \(8, 8, 0\)"),
    (lambda: vae_jax.conv_vae((8, 8, 3), widths=(8,), patch_size=1.0), "patch_size: expected an integer >= 1, got 1.0"),
    (lambda: vae_jax.mlp_vae((4,), latent_dim=-1), "latent_dim: expected an integer >= 1, got -1"),
    (lambda: vae_jax.mlp_vae((4,), hidden=(0,)), r"hidden: expected a tuple of integers >= 1, got \(0,\)"),
    (lambda: vae_jax.mlp_vae((4,), hidden=400), "hidden: expected a tuple of integers >= 1, got 400"),
    (lambda: vae_jax.mlp_vae((0,)), r"data_shape: expected a non-empty tuple of integers >= 1, got \(0,\)"),
    (lambda: vae_jax.mlp_vae((4,), likelihood=vae_jax.Bernoulli), r"likelihood: expected an instance such as vae_jax.Bernoulli\(\), got the class Bernoulli"),
    (lambda: vae_jax.mlp_vae((4,), prior=vae_jax.MixtureOfGaussians(0)), "prior.num_components: expected an integer >= 1, got 0"),
    (lambda: vae_jax.mlp_vae((4,), activation="relux"), r"activation: expected one of \[.*'relu'.*\], got 'relux'"),
    (lambda: vae_jax.hierarchical_vae((8, 8, 3), widths=(), groups_per_stage=()), r"widths: expected a non-empty tuple"),
    (lambda: vae_jax.hierarchical_vae((8, 8, 3), widths=(8,), groups_per_stage=(1,), latent_channels=0), "latent_channels: expected an integer >= 1, got 0"),
    (lambda: vae_jax.hierarchical_vae((8, 8, 3), widths=(8,), groups_per_stage=(1.5,)), r"groups_per_stage: expected .* >= 0, got \(1.5,\)"),
    (lambda: vae_jax.hierarchical_vae((8, 8, 3), widths=(8,), groups_per_stage=1, blocks_per_stage=-1), "blocks_per_stage: expected an integer >= 0, got -1"),
    (lambda: vae_jax.stochastic_mlp_vae((4, 4, 1), depth=1.5), "depth: expected an integer >= 1, got 1.5"),
    (lambda: vae_jax.stochastic_mlp_vae((4, 4, 1), widths=(8,), latent_sizes=(2.5,)), r"latent_sizes: expected .* got \(2.5,\)"),
    (lambda: vae_jax.stochastic_mlp_vae((4, 4, 1), widths=(), latent_sizes=()), r"latent_sizes: expected a non-empty tuple"),
    (lambda: vae_jax.linear_gaussian(0, 1), "data_dim: expected an integer >= 1, got 0"),
    (lambda: vae_jax.linear_gaussian(3, 0), "latent_dim: expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("build, message", BUILDS_THAT_INIT_CANNOT_BUILD)
def test_builders_refuse_sizes_that_init_cannot_build(build, message):
    """Refused when the model is described, naming the argument, the expected and the received
    (init used to crash inside jax or flax, or silently build something else)."""
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.slow
def test_params_that_do_not_fit_the_model_are_named_at_every_entry_point(mlp):
    model, params = mlp
    x = jnp.zeros((2, 4, 4, 1))
    z = jnp.zeros((2, 2))
    calls = {
        "elbo": lambda p: vae_jax.elbo(model, p, x, KEY),
        "elbo_terms": lambda p: vae_jax.elbo_terms(model, p, x, KEY),
        "iwae_bound": lambda p: vae_jax.iwae_bound(model, p, x, KEY, k=2),
        "log_importance_weights": lambda p: vae_jax.log_importance_weights(model, p, x, KEY, k=2),
        "log_likelihood": lambda p: vae_jax.log_likelihood(model, p, x, KEY, k=2),
        "encode": lambda p: vae_jax.encode(model, p, x),
        "decode": lambda p: vae_jax.decode(model, p, z),
        "sample": lambda p: vae_jax.sample(model, p, KEY, num_samples=2),
        "reconstruct": lambda p: vae_jax.reconstruct(model, p, x, KEY),
    }
    wider = vae_jax.mlp_vae((4, 4, 1), hidden=(8, 8), latent_dim=2)
    other = vae_jax.mlp_vae((4, 4, 1), hidden=(9,), latent_dim=2)
    cases = [
        ({"encoder": params["encoder"]}, r"^params: .*: missing params\['decoder'\]; missing params\['prior'\]$"),
        (vae_jax.init(wider, KEY), r": not in the model: params\['decoder'\]\['hidden_1'\]; not in the model: params\['encoder'\]\['hidden_1'\]$"),
        (vae_jax.init(other, KEY), r": params\['decoder'\]\['hidden_0'\]\['bias'\]: expected shape \(8,\), got shape \(9,\);"),
        (None, r"\(got a NoneType\): missing params\['decoder'\]; missing params\['encoder'\]; missing params\['prior'\]$"),
    ]
    for name, call in calls.items():
        for bad, message in cases:
            with pytest.raises(ValueError, match=message):
                call(bad)
        jax.block_until_ready(call(params))  # the model's own params pass
        jax.block_until_ready(jax.jit(call)(params))  # and traced ones


def test_the_params_reference_is_made_once_per_model(mlp):
    from vae_jax import checks

    model, params = mlp
    x = jnp.zeros((2, 4, 4, 1))
    vae_jax.elbo(model, params, x, KEY)
    before = checks._cached_param_template.cache_info()
    vae_jax.elbo(model, params, x, KEY)
    vae_jax.iwae_bound(model, params, x, KEY, k=2)
    vae_jax.encode(model, params, x)
    after = checks._cached_param_template.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 3)


def test_data_that_is_not_an_array_is_named_by_its_type_not_printed(mlp):
    model, params = mlp
    nested = np.zeros((2, 4, 4, 1)).tolist()
    with pytest.raises(ValueError) as error:
        vae_jax.elbo(model, params, nested, KEY)
    assert str(error.value) == "x: expected an array (jax.Array or numpy.ndarray), got list (as an array: shape (2, 4, 4, 1))"
    with pytest.raises(ValueError, match=r"^x: expected an array \(jax.Array or numpy.ndarray\), got list$"):
        vae_jax.elbo(model, params, [[0.0, 1.0], [0.0]], KEY)  # ragged
