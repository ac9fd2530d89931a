"""Priors p(z): the standard normal, a learned mixture of Gaussians, and the VampPrior.

Every prior here is a mixture of diagonal Gaussians (the standard normal is the mixture of
one fixed component), so one log-density and one sampler serve all of them; the priors only
differ in where the components come from:

- ``StandardNormal``: N(0, I), no parameters; the KL to a Gaussian posterior is analytic.
- ``MixtureOfGaussians``: sum_k pi_k N(mu_k, diag sigma_k^2), all learned.
- ``VampPrior``: (1/K) sum_k q(z | u_k), the encoder's posterior at K learned pseudo-inputs
  u_k (Tomczak & Welling 2018), so its components are computed by the model's encoder.

Priors are frozen dataclasses (static under ``jit``); their parameters live in the model's
params pytree under ``"prior"``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.networks.activations import soft_clamp


class MixtureComponents(NamedTuple):
    """A mixture of diagonal Gaussians: logits (K,), means and log-variances (K,) + latent."""

    logit_weights: jax.Array
    means: jax.Array
    log_vars: jax.Array


@dataclasses.dataclass(frozen=True)
class StandardNormal:
    def init(self, key, latent_shape, data_shape):
        del key, latent_shape, data_shape
        return {}


@dataclasses.dataclass(frozen=True)
class MixtureOfGaussians:
    """A learned K-component mixture; means start spread out, so components differ at init."""

    num_components: int = 10
    init_scale: float = 1.0

    def init(self, key, latent_shape, data_shape):
        del data_shape
        shape = (self.num_components, *latent_shape)
        return {
            "logit_weights": jnp.zeros((self.num_components,)),
            "means": self.init_scale * jax.random.normal(key, shape),
            "log_vars": jnp.zeros(shape),
        }


@dataclasses.dataclass(frozen=True)
class VampPrior:
    """(1/K) sum_k q(z | u_k) with K learned pseudo-inputs u_k of the data's shape."""

    num_components: int = 50

    def init(self, key, latent_shape, data_shape):
        del latent_shape
        # Pseudo-inputs start near mid-grey with small noise: inside the data's range, distinct.
        noise = 0.05 * jax.random.normal(key, (self.num_components, *data_shape))
        return {"pseudo_inputs": 0.5 + noise}


Prior = StandardNormal | MixtureOfGaussians | VampPrior


def standard_normal_components(latent_shape):
    return MixtureComponents(jnp.zeros((1,)), jnp.zeros((1, *latent_shape)), jnp.zeros((1, *latent_shape)))


def mixture_log_prob(components: MixtureComponents, z):
    """log p(z) = log sum_k pi_k N(z; mu_k, diag sigma_k^2), summed over the latent's axes."""
    return dist.mixture_of_diag_gaussians_log_prob(z, *components)


def batch_log_prob(components: MixtureComponents, z):
    """log p(z) for a batch z, shape (B,)."""
    return jax.vmap(mixture_log_prob, in_axes=(None, 0))(components, z)


def batch_sample(components: MixtureComponents, keys, temperature=1.0):
    """One draw per key, noise scaled by ``temperature``: shape (B, *latent)."""
    return jax.vmap(mixture_sample, in_axes=(None, 0, None))(components, keys, temperature)


def top_terms(prior: Prior, components_of, z, mean, log_var):
    """(log q, log p, KL) per example for a group drawn as z ~ q = N(mean, exp(log_var)) under the
    prior: KL(q || p) analytic for ``StandardNormal``, else the one-sample estimate log q - log p
    (``components_of()`` gives the prior's mixture only when it is needed)."""
    log_q = dist.sum_over_event(dist.diag_gaussian_log_prob(z, mean, log_var))
    if isinstance(prior, StandardNormal):
        log_p = dist.sum_over_event(dist.standard_normal_log_prob(z))
        return log_q, log_p, dist.sum_over_event(dist.kl_standard_normal(mean, log_var))
    log_p = batch_log_prob(components_of(), z)
    return log_q, log_p, log_q - log_p


def mixture_sample(components: MixtureComponents, key, temperature=1.0):
    """k ~ Categorical(pi), z = mu_k + temperature * sigma_k * eps."""
    component_key, noise_key = jax.random.split(key)
    k = jax.random.categorical(component_key, components.logit_weights)
    eps = jax.random.normal(noise_key, components.means.shape[1:])
    return components.means[k] + temperature * jnp.exp(0.5 * components.log_vars[k]) * eps


def components(prior: Prior, prior_params, latent_shape, posterior_of) -> MixtureComponents:
    """p(z) as a mixture of diagonal Gaussians. ``posterior_of(u)`` gives q(z|u)'s (mean, log_var)
    for a batch of encoder inputs u: the VampPrior's components are the posterior at its
    pseudo-inputs. Learned log-variances pass through the encoders' soft clamp, so a learned
    component can never collapse to a point or blow up."""
    if isinstance(prior, StandardNormal):
        return standard_normal_components(latent_shape)
    if isinstance(prior, VampPrior):
        means, log_vars = posterior_of(prior_params["pseudo_inputs"])
        return MixtureComponents(jnp.zeros((prior.num_components,)), means, log_vars)
    return MixtureComponents(
        prior_params["logit_weights"], prior_params["means"], soft_clamp(prior_params["log_vars"])
    )
