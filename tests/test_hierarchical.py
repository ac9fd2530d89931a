"""The hierarchical VAE: per-group KLs, the one-group reduction, transformations, bounds,
training, and generation from the priors or from part of a posterior path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed
from loss_curves import adam_losses

import vae_jax
from vae_jax.hierarchical import HierarchicalVAE, hierarchical_vae

# Three groups: z_1, z_2 at 4x4, z_3 at 8x8, over binary pixels. No extra residual blocks per
# stage and the cheapest likelihood, to keep compilation (most of these tests' time) short;
# the one-group model below has both the blocks and the 8-bit likelihood.
LIKELIHOOD = vae_jax.Bernoulli()


def tiny_ladder(groups_per_stage, *, blocks_per_stage=0, likelihood=LIKELIHOOD, **kwargs):
    return hierarchical_vae(
        (8, 8, 3), widths=(8, 8), groups_per_stage=groups_per_stage, latent_channels=4,
        blocks_per_stage=blocks_per_stage, likelihood=likelihood, **kwargs,
    )  # fmt: skip


MODEL = tiny_ladder((1, 2))
PIXELS = vae_jax.DiscretizedLogisticMixture(2)

# Compiled once for the module and reused: compilation, jitted or op by op, is most of the time.
INFER = jax.jit(MODEL.infer)
IWAE = jax.jit(lambda p, x, key: vae_jax.iwae_bound(MODEL, p, x, key, k=10))


def _elbo(params, x, key):
    """The ELBO from the jitted ``infer``, as ``vae_jax.elbo`` computes it (checked below)."""
    terms = INFER(params, x, jax.random.split(key, x.shape[0]))
    reconstruction = jnp.sum(LIKELIHOOD.log_prob(x, terms.decoder_out), axis=(1, 2))
    return reconstruction - sum(terms.kl_groups)


def _images(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3)), jnp.int32)


@pytest.fixture(scope="module")
def initial():
    return vae_jax.init(MODEL, jax.random.key(0))


@pytest.fixture(scope="module")
def params(initial):
    return perturbed(initial, 1)


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, 8, 8, 3)), jnp.float32)


def test_description_is_hashable_and_names_its_groups():
    assert isinstance(MODEL, HierarchicalVAE) and MODEL.num_groups == 3
    assert MODEL.group_shapes == ((4, 4, 4), (4, 4, 4), (8, 8, 4))
    assert [t.shape for t in MODEL.latent_template] == list(MODEL.group_shapes)
    assert MODEL == tiny_ladder((1, 2))
    assert hash(MODEL) == hash(tiny_ladder((1, 2)))
    assert MODEL != tiny_ladder((2, 2))


def test_builder_rejects_inconsistent_descriptions():
    with pytest.raises(ValueError, match="coarsest stage"):
        hierarchical_vae((8, 8, 3), widths=(8, 16), groups_per_stage=(2, 0))
    with pytest.raises(ValueError, match="one count per stage"):
        hierarchical_vae((8, 8, 3), widths=(8, 16), groups_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match="divisible"):
        hierarchical_vae((6, 6, 3), widths=(8, 16, 32), groups_per_stage=1)


def test_kls_are_small_at_initialisation(initial, x):
    terms = INFER(initial, x, jax.random.split(jax.random.key(1), 4))
    # Prior heads start at N(0, I) and posterior heads near it: q ~ p, KL well under a nat.
    assert float(jnp.max(sum(terms.kl_groups))) < 1.0
    assert all(float(jnp.min(kl)) >= 0.0 for kl in terms.kl_groups)


def test_per_group_kls_sum_to_the_total_and_the_elbo(params, x):
    key = jax.random.key(2)
    terms = vae_jax.elbo_terms(MODEL, params, x, key)
    assert len(terms.kl_groups) == MODEL.num_groups
    assert all(kl.shape == (4,) and kl.dtype == jnp.float32 for kl in terms.kl_groups)
    assert all(float(jnp.min(kl)) >= 0.0 for kl in terms.kl_groups)  # analytic, so never negative
    np.testing.assert_allclose(terms.kl, sum(terms.kl_groups), rtol=1e-6)
    np.testing.assert_allclose(
        vae_jax.elbo(MODEL, params, x, key), terms.reconstruction - terms.kl, rtol=1e-6
    )
    np.testing.assert_allclose(_elbo(params, x, key), terms.reconstruction - terms.kl, rtol=1e-5, atol=1e-3)
    # Free bits floor each group's KL separately.
    floor = float(max(jnp.max(kl) for kl in terms.kl_groups)) + 1.0
    np.testing.assert_allclose(
        vae_jax.weighted_elbo(terms, free_bits=floor),
        terms.reconstruction - MODEL.num_groups * floor,
        rtol=1e-5,
    )


def test_analytic_group_kls_agree_with_log_q_minus_log_p(params, x):
    """E_q[log q(z|x) - log p(z)] = E_q[sum_g KL_g(z_<g)]: both are estimates of the same KL
    (the second analytic in z_g given the path), so their paired difference has mean zero."""

    def difference(key):
        terms = INFER(params, x, jax.random.split(key, x.shape[0]))
        return np.asarray(terms.log_q - terms.log_p - sum(terms.kl_groups))

    d = np.stack([difference(k) for k in jax.random.split(jax.random.key(3), 200)])
    standard_error = d.std(axis=0) / np.sqrt(d.shape[0])
    assert np.all(np.abs(d.mean(axis=0)) < 4 * standard_error + 1e-4)


def test_one_group_elbo_is_the_single_layer_elbo():
    """With one group and p(z) = N(0, I) the ladder is a one-layer VAE:
    ELBO = log p(x | z) - KL(q(z|x) || N(0, I)), z = mean + std * eps, eps from fold_in(key_e, 0),
    recomputed here from the model's own encoder (``posterior``) and decoder (``decoder_output``)."""
    model = tiny_ladder((0, 1), blocks_per_stage=1, likelihood=PIXELS)  # with residual blocks per stage
    assert model.num_groups == 1
    params = perturbed(vae_jax.init(model, jax.random.key(0)), 4)
    x, key = _images(3, seed=5), jax.random.key(6)
    keys = jax.random.split(key, 3)
    mean, log_var = model.posterior(params, x)
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), model.group_shapes[0]))(keys)
    z = mean + jnp.exp(0.5 * log_var) * eps
    reconstruction = jnp.sum(PIXELS.log_prob(x, model.decoder_output(params, z)), axis=(1, 2))
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0, axis=(1, 2, 3))
    terms = vae_jax.elbo_terms(model, params, x, key)
    np.testing.assert_allclose(terms.kl_groups[0], kl, rtol=1e-5)
    np.testing.assert_allclose(terms.reconstruction, reconstruction, rtol=1e-5)
    np.testing.assert_allclose(vae_jax.elbo(model, params, x, key), reconstruction - kl, rtol=1e-5)
    latent = model.infer(params, x, keys)
    normal_log_prob = lambda v, m, lv: (
        -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + lv + (v - m) ** 2 / jnp.exp(lv), (1, 2, 3))
    )
    np.testing.assert_allclose(latent.log_q, normal_log_prob(z, mean, log_var), rtol=1e-5)
    np.testing.assert_allclose(latent.log_p, normal_log_prob(z, 0.0, 0.0), rtol=1e-5)


def test_jit_equals_no_jit(params, x):
    keys = jax.random.split(jax.random.key(7), 4)
    for name, a, b in zip(vae_jax.LatentTerms._fields, INFER(params, x, keys), MODEL.infer(params, x, keys)):
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-4, err_msg=name)


def test_vmap_over_single_examples_equals_the_batched_call(params, x):
    """Group g of example e draws from fold_in(keys[e], g), whatever the batch around it."""
    keys = jax.random.split(jax.random.key(8), 4)
    batched = INFER(params, x, keys)
    assert batched.decoder_out.shape == (4, 8, 8, 3, 1) and batched.log_q.shape == (4,)
    one = lambda xi, ki: jax.tree_util.tree_map(lambda a: a[0], MODEL.infer(params, xi[None], ki[None]))
    single = jax.jit(jax.vmap(one))(x, keys)
    for name, a, b in zip(vae_jax.LatentTerms._fields, single, batched):
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-4, err_msg=name)
    # Generation draws per example too: reversing the batch reverses the result.
    np.testing.assert_allclose(
        MODEL.generate_from(params, x[::-1], keys[::-1], 1, 0.8),
        MODEL.generate_from(params, x, keys, 1, 0.8)[::-1],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        MODEL.generate(params, keys[::-1], 0.8), MODEL.generate(params, keys, 0.8)[::-1], rtol=1e-5, atol=1e-5
    )


def test_same_key_is_bit_identical_and_different_keys_differ(params, x):
    for name, f in {"elbo": _elbo, "iwae": IWAE}.items():
        a, b, c = (np.asarray(f(params, x, jax.random.key(s))) for s in (5, 5, 6))
        assert np.array_equal(a, b) and not np.array_equal(a, c), name
    s1, s2, s3 = (vae_jax.sample(MODEL, params, jax.random.key(s), num_samples=2) for s in (3, 3, 4))
    assert s1.shape == (2, 8, 8, 3)
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)


def test_elbo_is_below_the_iwae_bound_on_average(params, x):
    keys = jax.random.split(jax.random.key(9), 8)
    elbo = np.mean([_elbo(params, x, k) for k in keys], axis=0)
    iwae = np.mean([IWAE(params, x, k) for k in keys], axis=0)
    assert np.all(elbo < iwae), (elbo, iwae)


def test_adam_steps_reduce_the_loss(initial, x):
    values = adam_losses(MODEL, initial, x, jax.random.key(10), steps=15)
    assert np.all(np.isfinite(values))
    assert values[-1] < values[0] - 1.0, values


def test_generation_shapes_and_temperature_zero(params, x):
    keys = jax.random.split(jax.random.key(11), 4)
    out_shape = (4, 8, 8, 3, LIKELIHOOD.params_per_subpixel)
    assert MODEL.generate(params, keys, 1.0).shape == out_shape
    for k in range(MODEL.num_groups + 1):
        assert MODEL.generate_from(params, x, keys, k, 0.5).shape == out_shape
    # At temperature 0 every group sits at its prior mean: z_1 = 0, then p(z_g | z_<g)'s mean.
    cold = MODEL.generate(params, keys, 0.0)
    _, records = MODEL._top_down(params, None, lambda g, posterior, prior: jnp.zeros((4, 4, 4, 4)) if g == 0 else prior[0], 4)
    np.testing.assert_allclose(cold, MODEL.decoder_output(params, tuple(r.z for r in records)), atol=1e-6)
    np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)


def test_keeping_every_group_is_the_reconstruction_path(params, x):
    key = jax.random.key(12)
    keys = jax.random.split(key, 4)
    inferred = INFER(params, x, keys).decoder_out
    for temperature in (0.0, 1.0):
        kept = MODEL.generate_from(params, x, keys, MODEL.num_groups, temperature)
        np.testing.assert_allclose(kept, inferred, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        vae_jax.reconstruct(MODEL, params, x, key),
        LIKELIHOOD.mean(MODEL.generate_from(params, x, keys, MODEL.num_groups, 0.0)),
        atol=1e-6,
    )
    # Other prior keys change nothing when no group is drawn from a prior.
    other = jax.random.split(jax.random.key(13), 4)
    np.testing.assert_allclose(
        MODEL.generate_from(params, x, keys, MODEL.num_groups, 1.0, prior_keys=other), inferred, atol=1e-6
    )


def test_partial_resampling_between_generation_and_reconstruction(params, x):
    keys = jax.random.split(jax.random.key(14), 4)
    other = jax.random.split(jax.random.key(15), 4)
    np.testing.assert_allclose(
        MODEL.generate_from(params, x, keys, 0, 0.7, prior_keys=other),
        MODEL.generate(params, other, 0.7),
        atol=1e-6,
    )
    # Keeping z_1 from x and resampling the finer groups: the prior keys now matter.
    a = MODEL.generate_from(params, x, keys, 1, 1.0)
    b = MODEL.generate_from(params, x, keys, 1, 1.0, prior_keys=other)
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="keep_groups"):
        MODEL.generate_from(params, x, keys, MODEL.num_groups + 1)
    with pytest.raises(ValueError, match="one key per example"):
        MODEL.generate_from(params, x, keys[:2], 1)


def test_encode_gives_every_group_and_decode_takes_them_all(params, x):
    mean, log_var = vae_jax.encode(MODEL, params, x)
    assert [m.shape[1:] for m in mean] == [v.shape[1:] for v in log_var] == list(MODEL.group_shapes)
    single_mean, _ = vae_jax.encode(MODEL, params, x[0])
    for single, batched in zip(single_mean, mean):
        np.testing.assert_allclose(single, batched[0], rtol=1e-5, atol=1e-6)
    assert vae_jax.decode(MODEL, params, mean).shape == (4, 8, 8, 3, LIKELIHOOD.params_per_subpixel)
    with pytest.raises(ValueError, match="structured like"):
        vae_jax.decode(MODEL, params, mean[0])  # the top group alone is not the latent


def test_prior_log_prob_is_the_top_down_sum(params, x):
    """log p(z) = log N(z_1; 0, I) + sum_{g>1} log N(z_g; prior_g(z_<g)), recomputed group by group."""
    z = INFER(params, x, jax.random.split(jax.random.key(17), 4))  # any latent will do: use a draw's path
    mean, _ = vae_jax.encode(MODEL, params, x)
    _, records = MODEL._top_down(params, None, lambda g, posterior, prior: mean[g], 4)

    def log_normal(v, m, lv):
        return jnp.sum(-0.5 * (jnp.log(2 * jnp.pi) + lv + (v - m) ** 2 / jnp.exp(lv)), axis=(1, 2, 3))

    expected = log_normal(mean[0], 0.0, 0.0) + sum(log_normal(r.z, *r.prior) for r in records[1:])
    np.testing.assert_allclose(MODEL.prior_log_prob(params, mean), expected, rtol=1e-5)
    assert z.log_p.shape == expected.shape


def test_bfloat16_compute_keeps_likelihood_and_kl_in_float32(params, x):
    model = tiny_ladder((1, 2), dtype=jnp.bfloat16)
    keys = jax.random.split(jax.random.key(16), 4)
    terms = jax.jit(model.infer)(params, x, keys)  # float32 params serve both compute dtypes
    reference = INFER(params, x, keys)
    assert terms.decoder_out.dtype == terms.log_q.dtype == terms.log_p.dtype == jnp.float32
    assert all(kl.dtype == jnp.float32 for kl in terms.kl_groups)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(terms))
    reconstruction = lambda t: jnp.sum(LIKELIHOOD.log_prob(x, t.decoder_out), axis=(1, 2))
    np.testing.assert_allclose(reconstruction(terms), reconstruction(reference), rtol=0.02)
    np.testing.assert_allclose(sum(terms.kl_groups), sum(reference.kl_groups), rtol=0.1, atol=0.05)



def _walk_top_down(params, x, z, features):
    """The ``HierarchicalModel`` steps, as a coder walks them, with z_g = ``z[g]``: each group's
    (prior, posterior) and the decoder output at the end."""
    state, statistics = MODEL.top_down_start(params, x.shape[0], x.shape[1:3]), []
    for g in range(MODEL.num_groups):
        step, prior, posterior = MODEL.top_down_to_group(params, state, features, g)
        statistics.append((prior, posterior))
        state = MODEL.top_down_merge(params, step, z[g], g)
    return statistics, MODEL.top_down_output(params, state)


def test_the_top_down_steps_are_the_whole_pass_one_group_at_a_time(params, x):
    """At the path of posterior means, the steps give exactly the posterior ``posterior`` returns,
    the decoder output ``decoder_output`` gives of it and the priors ``prior_log_prob`` scores:
    the same computation, op for op (both run op by op here). Without data (decoding) the steps
    give the same priors and no posterior."""
    from vae_jax import distributions as dist
    from vae_jax import priors as priors_lib

    assert isinstance(MODEL, vae_jax.HierarchicalModel)
    means, log_vars = MODEL.posterior(params, x)
    statistics, out = _walk_top_down(params, x, means, MODEL.bottom_up_features(params, x))
    for g, (prior, posterior) in enumerate(statistics):
        np.testing.assert_array_equal(posterior[0], means[g])
        np.testing.assert_array_equal(posterior[1], log_vars[g])
        assert (prior is None) == (g == 0)
    np.testing.assert_array_equal(out, MODEL.decoder_output(params, means))
    log_p = priors_lib.batch_log_prob(MODEL.prior_components(params), means[0])
    for g, (prior, _) in enumerate(statistics[1:], 1):
        log_p += dist.sum_over_event(dist.diag_gaussian_log_prob(means[g], *prior))
    np.testing.assert_array_equal(log_p, MODEL.prior_log_prob(params, means))
    without_data, out_without = _walk_top_down(params, x, means, None)
    for (prior, _), (prior_alone, posterior_alone) in zip(statistics, without_data, strict=True):
        assert posterior_alone is None
        if prior is not None:
            np.testing.assert_array_equal(prior_alone[0], prior[0])
            np.testing.assert_array_equal(prior_alone[1], prior[1])
    np.testing.assert_array_equal(out_without, out)


def test_the_posterior_step_alone_is_the_posterior_of_the_step_with_data(params, x):
    """A decoder walks on the priors (``top_down_to_group`` without data) and asks for each group's
    posterior later, once it has x (``top_down_posterior``): exactly what the step with data gives."""
    means, _ = MODEL.posterior(params, x)
    features = MODEL.bottom_up_features(params, x)
    state = MODEL.top_down_start(params, x.shape[0], x.shape[1:3])
    for g in range(MODEL.num_groups):
        _, _, posterior = MODEL.top_down_to_group(params, state, features, g)
        step, _, none = MODEL.top_down_to_group(params, state, None, g)
        alone = MODEL.top_down_posterior(params, step, features, g)
        assert none is None
        np.testing.assert_array_equal(alone[0], posterior[0])
        np.testing.assert_array_equal(alone[1], posterior[1])
        state = MODEL.top_down_merge(params, step, means[g], g)
