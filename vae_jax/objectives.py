"""The VAE's objectives as pure functions of ``(model, params, data..., key, *, options)``.

Every function accepts one example ``x`` of shape ``model.data_shape`` or a batch
``(B, *data_shape)`` (``vae_jax.batching``: a batch's key is split into one key per example, so
``jax.vmap`` of the single-example call over ``jax.random.split(key, B)`` equals the batched
call). Results are nats per example. ``model`` is any ``vae_jax.model.LatentVariableModel``; a
latent ``z`` is an array for one group and a tuple of arrays (top-down) for several.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from vae_jax import batching, checks


class ElboTerms(NamedTuple):
    """Per-example pieces of the ELBO, each (B,) (or scalars for one example).

    reconstruction: E_q[log p(x|z)] (one-sample estimate); kl: sum of ``kl_groups``.
    """

    reconstruction: jax.Array
    kl: jax.Array
    kl_groups: tuple[jax.Array, ...]


def data_log_prob(model, x, decoder_out):
    """log p(x|z), one number per example, from the decoder's output at z."""
    return model.likelihood.log_prob_sum(x, decoder_out, len(model.data_shape))


def encode(model, params, x):
    """``(mean, log_var)`` of q(z|x); for a hierarchy, each group's along the path of posterior
    means (so ``decode(encode(x)[0])`` is the deterministic reconstruction, as for one group)."""
    checks.check_params(model, params)
    x, batched = checks.checked_data("x", x, model.likelihood.input_kind, model.data_shape)
    xb = jnp.asarray(x) if batched else jnp.asarray(x)[None]
    return batching.unbatch(model.posterior(params, xb), batched)


def decode(model, params, z):
    """The likelihood's parameters of p(x|z): shape ``likelihood.params_shape(data_shape)`` per z
    (z: every group of the latent)."""
    checks.check_params(model, params)
    batched = checks.check_latent("z", z, model.latent_template)
    zb = z if batched else jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], z)
    return batching.unbatch(model.decoder_output(params, zb), batched)


def elbo_terms(model, params, x, key) -> ElboTerms:
    """One-sample reconstruction term and the (analytic where possible) KL, per example."""
    checks.check_params(model, params)
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    terms = model.infer(params, xb, keys)
    reconstruction = data_log_prob(model, xb, terms.decoder_out)
    chex.assert_shape([reconstruction, terms.log_q, terms.log_p, *terms.kl_groups], (xb.shape[0],))
    return batching.unbatch(ElboTerms(reconstruction, sum(terms.kl_groups), terms.kl_groups), batched)


def elbo(model, params, x, key):
    """ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x), nats per example.

    Monte Carlo over one draw z ~ q(z|x) for the first term; the KL is analytic for a
    Gaussian posterior and standard-normal prior, else the one-sample estimate
    log q(z|x) - log p(z). Training objectives that are not the bound (beta, free bits) are
    ``weighted_elbo(elbo_terms(...))``.
    """
    terms = elbo_terms(model, params, x, key)
    return terms.reconstruction - terms.kl


def weighted_elbo(terms: ElboTerms, *, beta=1.0, free_bits=0.0):
    """reconstruction - beta * sum_g max(free_bits, KL_g): the ELBO's training form.

    ``beta`` weights the KL (beta-VAE, Higgins et al. 2017; KL warm-up, Sonderby et al. 2016);
    ``free_bits`` = lambda replaces each latent group's KL_g by max(lambda, KL_g) per example
    (Kingma et al. 2016). With the defaults it is the ELBO.
    """
    kls = terms.kl_groups
    if free_bits:
        kls = tuple(jnp.maximum(kl, free_bits) for kl in kls)
    return terms.reconstruction - beta * sum(kls)


def log_weights(model, params, xb, keys):
    """log w = log p(x|z) + log p(z) - log q(z|x) at one draw z ~ q(z|x) per example of a batch."""
    terms = model.infer(params, xb, keys)
    return data_log_prob(model, xb, terms.decoder_out) + terms.log_p - terms.log_q


def sample_log_weights(model, params, xb, keys, k):
    """(B, k) log-weights of a batch, sample i of example e drawn with split(keys[e], k)[i]."""
    chex.assert_equal_shape_prefix([xb, keys], 1)
    sample_keys = jax.vmap(partial(jax.random.split, num=k))(keys)
    return jax.vmap(lambda ks: log_weights(model, params, xb, ks), in_axes=1, out_axes=1)(sample_keys)


def log_importance_weights(model, params, x, key, *, k):
    """(B, k) log-weights log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) i.i.d."""
    checks.check_count("k", k, 1)
    checks.check_params(model, params)
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    return batching.unbatch(sample_log_weights(model, params, xb, keys, k), batched)


def iwae_bound(model, params, x, key, *, k=50):
    """L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)] (Burda et al. 2015), nats per example.

    L_1 is the ELBO (with the KL estimated by sampling); L_k rises with k towards log p(x).
    A large batch is evaluated a group of examples at a time (``batching.map_in_groups``), so
    memory follows the group; for large k use ``vae_jax.log_likelihood``, which also streams
    each example's samples.
    """
    checks.check_count("k", k, 1)
    checks.check_params(model, params)
    xb, keys, batched = batching.batch_and_keys(model, x, key)

    def bound(group):
        return jax.nn.logsumexp(sample_log_weights(model, params, *group, k), axis=-1) - math.log(k)

    group_size = max(1, batching.samples_per_chunk(model, params) // k)
    return batching.unbatch(batching.map_in_groups(bound, (xb, keys), group_size), batched)


def sample(model, params, key, *, num_samples=1, temperature=1.0, return_mean=False):
    """Draw ``num_samples`` images: z ~ p(z) (noise scaled by ``temperature``), x ~ p(x|z).

    With ``return_mean`` the likelihood's mean (in [0, 1] for the image likelihoods) replaces the
    draw x.
    """
    checks.check_key("key", key)
    checks.check_count("num_samples", num_samples, 1)
    checks.check_finite_non_negative("temperature", temperature)
    checks.check_params(model, params)
    latent_key, pixel_key = jax.random.split(key)
    out = model.generate(params, jax.random.split(latent_key, num_samples), temperature)
    if return_mean:
        return model.likelihood.mean(out)
    return model.likelihood.sample(out, pixel_key)


def reconstruct(model, params, x, key):
    """The likelihood's mean at one draw z ~ q(z|x): what the model saw in x."""
    checks.check_params(model, params)
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    return batching.unbatch(model.likelihood.mean(model.infer(params, xb, keys).decoder_out), batched)
