"""Richer priors: log-densities against brute-force mixtures (scipy), the VampPrior's
components, the one-sample Monte Carlo KL against the analytic KL, and training with each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_curves import adam_losses
from scipy import special, stats

import vae_jax
from vae_jax import priors
from vae_jax.hierarchical import hierarchical_vae

LATENT = 3


def _mlp(prior):
    # A "unit" (Gaussian) likelihood: pseudo-inputs, like data, live in [0, 1].
    return vae_jax.mlp_vae((4, 4, 1), hidden=(16,), latent_dim=LATENT, likelihood=vae_jax.Gaussian(0.1), prior=prior)


def _unit_images(n, shape=(4, 4, 1), seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, *shape)), jnp.float32)


def _brute_force_mixture_log_prob(z, logit_weights, means, log_vars):
    """log sum_k pi_k prod_d N(z_d; mu_kd, sigma_kd^2), one scipy density per component."""
    log_pi = special.log_softmax(np.asarray(logit_weights, np.float64))
    per_component = [
        log_pi[k] + stats.norm.logpdf(z, means[k], np.exp(0.5 * log_vars[k])).sum(axis=-1)
        for k in range(len(log_pi))
    ]
    return special.logsumexp(np.stack(per_component), axis=0)


def test_standard_normal_log_density_matches_scipy():
    model = _mlp(vae_jax.StandardNormal())
    params = vae_jax.init(model, jax.random.key(0))
    z = np.random.default_rng(1).normal(size=(5, LATENT))
    want = stats.multivariate_normal(np.zeros(LATENT), np.eye(LATENT)).logpdf(z)
    np.testing.assert_allclose(model.prior_log_prob(params, jnp.asarray(z, jnp.float32)), want, rtol=1e-5)


def test_mixture_of_gaussians_log_density_matches_a_brute_force_mixture():
    model = _mlp(vae_jax.MixtureOfGaussians(4))
    params = vae_jax.init(model, jax.random.key(0))
    rng = np.random.default_rng(2)
    params["prior"] = {
        "logit_weights": jnp.asarray(rng.normal(size=4), jnp.float32),
        "means": jnp.asarray(rng.normal(size=(4, LATENT)), jnp.float32),
        "log_vars": jnp.asarray(rng.uniform(-1.5, 1.0, size=(4, LATENT)), jnp.float32),
    }
    z = rng.normal(size=(7, LATENT)) * 2.0
    logits, means, raw_log_vars = (
        np.asarray(params["prior"][k]) for k in ("logit_weights", "means", "log_vars")
    )
    # Learned log-variances are stored before the encoders' soft clamp 10 tanh(v / 10).
    want = _brute_force_mixture_log_prob(z, logits, means, 10.0 * np.tanh(raw_log_vars / 10.0))
    np.testing.assert_allclose(
        model.prior_log_prob(params, jnp.asarray(z, jnp.float32)), want, rtol=1e-5, atol=1e-5
    )


def test_mixture_samples_have_the_mixture_mean_and_variance():
    rng = np.random.default_rng(3)
    components = priors.MixtureComponents(
        jnp.asarray([0.0, 1.0, -0.5]),
        jnp.asarray(rng.normal(size=(3, 2)) * 2, jnp.float32),
        jnp.asarray(rng.uniform(-1, 0.5, size=(3, 2)), jnp.float32),
    )
    draws = np.asarray(
        jax.vmap(priors.mixture_sample, in_axes=(None, 0))(
            components, jax.random.split(jax.random.key(0), 20000)
        )
    )
    pi = np.asarray(jax.nn.softmax(components.logit_weights))[:, None]
    means, variances = np.asarray(components.means), np.exp(np.asarray(components.log_vars))
    mean = (pi * means).sum(0)
    variance = (pi * (variances + means**2)).sum(0) - mean**2
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(variance / 20000))
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)


def test_vamp_prior_components_are_the_encoder_posterior_at_its_pseudo_inputs():
    model = _mlp(vae_jax.VampPrior(5))
    params = vae_jax.init(model, jax.random.key(0))
    pseudo = params["prior"]["pseudo_inputs"]
    assert pseudo.shape == (5, 4, 4, 1)
    components = model.prior_components(params)
    mean, log_var = vae_jax.encode(model, params, pseudo)
    np.testing.assert_allclose(components.means, mean, rtol=1e-6)
    np.testing.assert_allclose(components.log_vars, log_var, rtol=1e-6)
    np.testing.assert_allclose(jax.nn.softmax(components.logit_weights), np.full(5, 0.2), rtol=1e-6)
    # And its density is the uniform mixture of those posteriors.
    z = np.random.default_rng(4).normal(size=(6, LATENT))
    want = _brute_force_mixture_log_prob(z, np.zeros(5), np.asarray(mean), np.asarray(log_var))
    np.testing.assert_allclose(
        model.prior_log_prob(params, jnp.asarray(z, jnp.float32)), want, rtol=1e-5, atol=1e-5
    )


def _standard_normal_as_a_mixture(latent_shape):
    """A one-component MixtureOfGaussians whose component is N(0, I): the same prior, with
    the KL now estimated by log q(z|x) - log p(z) at one draw instead of in closed form."""
    return {
        "logit_weights": jnp.zeros((1,)),
        "means": jnp.zeros((1, *latent_shape)),
        "log_vars": jnp.zeros((1, *latent_shape)),
    }


def test_monte_carlo_kl_is_unbiased_for_the_analytic_kl(record_property):
    analytic_model = _mlp(vae_jax.StandardNormal())
    sampled_model = _mlp(vae_jax.MixtureOfGaussians(1))
    params = vae_jax.init(analytic_model, jax.random.key(0))
    # Move the posterior well away from the prior, so the KL is a few nats, not ~0.
    params["encoder"]["mean"]["bias"] = jnp.asarray([1.5, -1.0, 0.5])
    params["encoder"]["log_var"]["bias"] = jnp.asarray([-1.0, 0.5, -2.0])
    x = _unit_images(4, seed=5)
    analytic = np.asarray(vae_jax.elbo_terms(analytic_model, params, x, jax.random.key(1)).kl)
    sampled_params = {**params, "prior": _standard_normal_as_a_mixture((LATENT,))}
    keys = jax.random.split(jax.random.key(2), 4000)
    kls = np.asarray(
        jax.jit(jax.vmap(lambda k: vae_jax.elbo_terms(sampled_model, sampled_params, x, k).kl))(keys)
    )
    per_sample_std = kls.std(axis=0)
    record_property("mc_kl_per_sample_std", per_sample_std.tolist())
    record_property("analytic_kl", analytic.tolist())
    print(f"analytic KL {analytic}, one-sample MC KL std {per_sample_std}")
    assert np.all(analytic > 1.0)
    assert np.all(np.abs(kls.mean(axis=0) - analytic) < 4 * per_sample_std / np.sqrt(len(keys)))


def test_hierarchical_top_prior_accepts_the_mixture_priors():
    """The HVAE's top group takes the same priors: its VampPrior components are the top
    posterior at the pseudo-inputs, and its sampled KL is unbiased for the analytic one."""
    vamp = hierarchical_vae(
        (4, 4, 1), widths=(8,), groups_per_stage=(2,), latent_channels=2, blocks_per_stage=0,
        likelihood=vae_jax.Gaussian(0.1), prior=vae_jax.VampPrior(3),
    )
    params = vae_jax.init(vamp, jax.random.key(0))
    components = vamp.prior_components(params)
    mean, log_var = vae_jax.encode(vamp, params, params["prior"]["pseudo_inputs"])  # every group
    np.testing.assert_allclose(components.means, mean[0], rtol=1e-6)  # the top group's
    np.testing.assert_allclose(components.log_vars, log_var[0], rtol=1e-6)

    analytic_model = hierarchical_vae(
        (4, 4, 1), widths=(8,), groups_per_stage=(2,), latent_channels=2, blocks_per_stage=0,
        likelihood=vae_jax.Gaussian(0.1),
    )
    sampled_model = hierarchical_vae(
        (4, 4, 1), widths=(8,), groups_per_stage=(2,), latent_channels=2, blocks_per_stage=0,
        likelihood=vae_jax.Gaussian(0.1), prior=vae_jax.MixtureOfGaussians(1),
    )
    params = {**params, "prior": {}}
    x = _unit_images(3, seed=6)
    sampled_params = {**params, "prior": _standard_normal_as_a_mixture(analytic_model.group_shapes[0])}

    def top_kls(k):
        return (
            vae_jax.elbo_terms(analytic_model, params, x, k).kl_groups[0],
            vae_jax.elbo_terms(sampled_model, sampled_params, x, k).kl_groups[0],
        )

    analytic, sampled = (
        np.asarray(a) for a in jax.jit(jax.vmap(top_kls))(jax.random.split(jax.random.key(7), 2000))
    )
    np.testing.assert_allclose(analytic, np.broadcast_to(analytic[0], analytic.shape), rtol=1e-5)  # no noise
    standard_error = sampled.std(axis=0) / np.sqrt(len(sampled))
    assert np.all(np.abs(sampled.mean(axis=0) - analytic[0]) < 4 * standard_error + 1e-4)


@pytest.mark.parametrize(
    "prior", [vae_jax.StandardNormal(), vae_jax.MixtureOfGaussians(3), vae_jax.VampPrior(3)], ids=repr
)
def test_adam_steps_reduce_the_loss_with_each_prior(prior):
    model = _mlp(prior)
    params = vae_jax.init(model, jax.random.key(0))
    x, key = _unit_images(8, seed=8), jax.random.key(9)
    values = adam_losses(model, params, x, key, steps=20)
    assert np.all(np.isfinite(values))
    assert values[-1] < values[0] - 0.5, values
