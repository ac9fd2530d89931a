"""The VAE's objectives as pure functions of ``(model, params, x, key)``.

Every function accepts one example ``x`` of shape ``model.data_shape`` or a batch
``(B, *data_shape)``. A batch's key is split into one key per example, and one example uses
its key as given, so ``jax.vmap`` of the single-example call over
``jax.random.split(key, B)`` equals the batched call. Results are nats per example.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

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


def _data_log_prob(model, x, decoder_out):
    """log p(x|z) = sum_d log p(x_d | z): the likelihood on the data flattened to D sub-pixels.

    Every likelihood here factorizes over sub-pixels, so flattening changes no value; it
    keeps the elementwise math on one long contiguous axis. On the (28, 28, 1) layout, whose
    minor axis has size 1, XLA:CPU does not vectorize it: the k=5000 log-likelihood of the
    784-400-20 MLP spent two thirds of its time there (61 vs 19 ms a chunk of 8 x 500).
    """
    event = len(model.data_shape)
    x_flat = jnp.reshape(x, (*x.shape[: x.ndim - event], -1))
    lead = decoder_out.shape[: decoder_out.ndim - event - 1]
    out_flat = jnp.reshape(decoder_out, (*lead, x_flat.shape[-1], decoder_out.shape[-1]))
    return jnp.sum(model.likelihood.log_prob(x_flat, out_flat), axis=-1)


def encode(model, params, x):
    """Posterior parameters ``(mean, log_var)`` of q(z|x) (the top group for hierarchies)."""
    batched = checks.check_data("x", x, model.likelihood.input_kind, model.data_shape)
    xb = jnp.asarray(x) if batched else jnp.asarray(x)[None]
    return batching.unbatch(model.posterior(params, xb), batched)


def decode(model, params, z):
    """The likelihood's parameters at z: shape ``(*data_shape, params_per_subpixel)`` per z."""
    batched = checks.batch_rank("z", z, model.latent_shape)
    zb = jnp.asarray(z) if batched else jnp.asarray(z)[None]
    return batching.unbatch(model.decoder_output(params, zb), batched)


def elbo_terms(model, params, x, key) -> ElboTerms:
    """One-sample reconstruction term and the (analytic where possible) KL, per example."""
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    terms = model.infer(params, xb, keys)
    reconstruction = _data_log_prob(model, xb, terms.decoder_out)
    kl = sum(terms.kl_groups)
    return batching.unbatch(ElboTerms(reconstruction, kl, terms.kl_groups), batched)


def elbo(model, params, x, key, *, beta=1.0, free_bits=0.0):
    """ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), nats per example.

    Monte Carlo over one draw z ~ q(z|x) for the first term; the KL is analytic for a
    Gaussian posterior and standard-normal prior, else the one-sample estimate
    log q(z|x) - log p(z). Options turn the bound into a training objective:
    ``beta`` weights the KL (beta-VAE, Higgins et al. 2017) and ``free_bits`` = lambda
    replaces each latent group's KL_g by max(lambda, KL_g) (Kingma et al. 2016), per
    example. With the defaults it is the ELBO itself, a lower bound on log p(x).
    """
    return weighted_elbo(elbo_terms(model, params, x, key), beta=beta, free_bits=free_bits)


def weighted_elbo(terms: ElboTerms, *, beta=1.0, free_bits=0.0):
    """reconstruction - beta * sum_g max(free_bits, KL_g): the training form of the ELBO."""
    kls = terms.kl_groups
    if free_bits:
        kls = tuple(jnp.maximum(kl, free_bits) for kl in kls)
    return terms.reconstruction - beta * sum(kls)


def _log_weights(model, params, xb, keys):
    """log w = log p(x|z) + log p(z) - log q(z|x) at one draw z ~ q(z|x) per example."""
    terms = model.infer(params, xb, keys)
    log_px_given_z = _data_log_prob(model, xb, terms.decoder_out)
    return log_px_given_z + terms.log_p - terms.log_q


def log_importance_weights(model, params, x, key, k):
    """(B, k) log-weights log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) i.i.d., vmapped over i."""
    checks.check_positive_int("k", k)
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    return batching.unbatch(_sample_log_weights(model, params, xb, keys, k), batched)


def _sample_log_weights(model, params, xb, keys, k):
    """(B, k) log-weights of a batch, sample i of example e drawn with split(keys[e], k)[i]."""
    sample_keys = jax.vmap(partial(jax.random.split, num=k))(keys)
    return jax.vmap(lambda ks: _log_weights(model, params, xb, ks), in_axes=1, out_axes=1)(sample_keys)


def iwae_bound(model, params, x, key, k=50):
    """L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)] (Burda et al. 2015), nats per example.

    L_1 is the ELBO (with the KL estimated by sampling); L_k rises with k towards log p(x).
    A large batch is evaluated a group of examples at a time (``batching.map_in_groups``, with
    groups of about ``samples_per_chunk / k`` examples), so memory follows the group; the
    result does not depend on the grouping. For large k use ``vae_jax.log_likelihood``, which
    streams the samples of each example too.
    """
    checks.check_positive_int("k", k)
    xb, keys, batched = batching.batch_and_keys(model, x, key)

    def bound(group):
        log_w = _sample_log_weights(model, params, *group, k)
        return jax.nn.logsumexp(log_w, axis=-1) - math.log(k)

    group_size = max(1, batching.samples_per_chunk(model, params) // k)
    return batching.unbatch(batching.map_in_groups(bound, (xb, keys), group_size), batched)


def sample(model, params, key, num_samples, *, temperature=1.0, return_mean=False):
    """Draw ``num_samples`` images: z ~ p(z) (noise scaled by ``temperature``), x ~ p(x|z).

    With ``return_mean`` the likelihood's mean (in [0, 1]) replaces the draw x.
    """
    checks.check_key("key", key)
    checks.check_positive_int("num_samples", num_samples)
    checks.check_finite_non_negative("temperature", temperature)
    latent_key, pixel_key = jax.random.split(key)
    out = model.generate(params, jax.random.split(latent_key, num_samples), temperature)
    if return_mean:
        return model.likelihood.mean(out)
    return model.likelihood.sample(out, pixel_key)


def reconstruct(model, params, x, key):
    """The likelihood's mean (in [0, 1]) at one draw z ~ q(z|x): what the model saw in x."""
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    return batching.unbatch(model.likelihood.mean(model.infer(params, xb, keys).decoder_out), batched)
