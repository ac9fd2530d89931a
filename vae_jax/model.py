"""The VAE as a frozen, hashable description: networks + likelihood + prior + shapes.

A ``VAE`` holds no parameters; ``init`` gives the params pytree
``{"encoder": ..., "decoder": ..., "prior": ...}``. Because the description is hashable it can
be a static argument of ``jax.jit``, and the same description serves every params pytree.

The objectives in ``vae_jax.objectives`` talk to a model only through three methods, so any
latent structure (this one-group VAE, the hierarchical VAE in ``vae_jax.hierarchical``) fits
under the same ``elbo`` and ``iwae_bound``:

- ``infer(params, x, keys)`` draws z ~ q(z|x) per example and returns ``LatentTerms``;
- ``generate(params, keys, temperature)`` draws z ~ p(z) and returns the decoder's output;
- ``posterior(params, x)`` gives the (top) posterior's ``(mean, log_var)``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import priors as priors_lib
from vae_jax.likelihoods import Likelihood
from vae_jax.priors import Prior, StandardNormal


class LatentTerms(NamedTuple):
    """One posterior draw per example, and what the bounds need of it.

    decoder_out: (B, *data_shape, P), the likelihood's parameters at the drawn z.
    kl_groups: one (B,) array per latent group: KL(q || p) of that group, analytic where the
        prior allows it, else the single-sample estimate log q(z_g|.) - log p(z_g|.).
    log_q, log_p: (B,), log q(z|x) and log p(z) at the drawn z (for importance weights).
    """

    decoder_out: jax.Array
    kl_groups: tuple[jax.Array, ...]
    log_q: jax.Array
    log_p: jax.Array


def _sum_over_event(values, batch_ndim=1):
    return jnp.sum(values, axis=tuple(range(batch_ndim, values.ndim)))


def encoder_input(input_kind, x):
    """What the encoder sees: 8-bit integers are rescaled to [-1, 1], other data as given."""
    x = jnp.asarray(x, jnp.float32)
    return x / 127.5 - 1.0 if input_kind == "discrete" else x


@dataclasses.dataclass(frozen=True)
class VAE:
    """One group of latents z with shape ``latent_shape``: q(z|x) p(x|z) p(z)."""

    encoder: nn.Module
    decoder: nn.Module
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    prior: Prior = StandardNormal()

    def init(self, key):
        encoder_key, decoder_key, prior_key = jax.random.split(key, 3)
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        z = jnp.zeros((1, *self.latent_shape), jnp.float32)
        params = {
            "encoder": self.encoder.init(encoder_key, x)["params"],
            "decoder": self.decoder.init(decoder_key, z)["params"],
            "prior": self.prior.init(prior_key, self.latent_shape, self.data_shape),
        }
        _check_network_shapes(self, params)
        return params

    def posterior(self, params, x):
        """(mean, log_var) of q(z|x) for a batch x."""
        features = encoder_input(self.likelihood.input_kind, x)
        return self.encoder.apply({"params": params["encoder"]}, features)

    def decoder_output(self, params, z):
        return self.decoder.apply({"params": params["decoder"]}, z)

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        posterior_of = lambda u: self.encoder.apply({"params": params["encoder"]}, u)
        return priors_lib.components(self.prior, params["prior"], self.latent_shape, posterior_of)

    def prior_log_prob(self, params, z):
        """log p(z) for a batch z, shape (B,)."""
        components = self.prior_components(params)
        return jax.vmap(priors_lib.mixture_log_prob, in_axes=(None, 0))(components, z)

    def infer(self, params, x, keys) -> LatentTerms:
        mean, log_var = self.posterior(params, x)
        z = jax.vmap(dist.diag_gaussian_sample)(mean, log_var, keys)
        log_q = _sum_over_event(dist.diag_gaussian_log_prob(z, mean, log_var))
        if isinstance(self.prior, StandardNormal):
            log_p = _sum_over_event(dist.standard_normal_log_prob(z))
            kl = _sum_over_event(dist.kl_standard_normal(mean, log_var))
        else:
            log_p = self.prior_log_prob(params, z)
            kl = log_q - log_p
        return LatentTerms(self.decoder_output(params, z), (kl,), log_q, log_p)

    def generate(self, params, keys, temperature=1.0):
        """Decoder output at z ~ p(z) (means scaled by 1, noise by ``temperature``)."""
        components = self.prior_components(params)
        z = jax.vmap(priors_lib.mixture_sample, in_axes=(None, 0, None))(components, keys, temperature)
        return self.decoder_output(params, z)


def _check_network_shapes(model, params):
    """Fail at init, with the shapes named, if the networks do not fit the description."""
    x = jnp.zeros((1, *model.data_shape), jnp.float32)
    mean, log_var = jax.eval_shape(lambda p: model.posterior(p, x), params)
    want = (1, *model.latent_shape)
    if mean.shape != want or log_var.shape != want:
        raise ValueError(
            f"encoder returns posterior of shape {mean.shape}/{log_var.shape}, "
            f"expected (batch, *latent_shape) = {want}"
        )
    z = jnp.zeros(want, jnp.float32)
    out = jax.eval_shape(lambda p: model.decoder_output(p, z), params)
    want_out = (1, *model.data_shape, model.likelihood.params_per_subpixel)
    if out.shape != want_out:
        raise ValueError(
            f"decoder returns {out.shape}, expected (batch, *data_shape, params_per_subpixel) = {want_out}"
        )
