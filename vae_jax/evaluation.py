"""Evaluation: importance-sampled log-likelihood with bounded memory, and bits per dimension."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_jax import batching, checks, objectives


def log_likelihood(model, params, x, key, *, k=5000, chunk_size=None):
    """log p(x) ~= log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x), z_i ~ q(z|x), nats per example.

    The estimator of Burda et al. (2015), the standard for reporting test NLL (k = 5000). The
    samples are drawn ``chunk_size`` at a time (``chunking``) and folded into a running
    log-sum-exp, a group of examples at a time (``batching.log_sum_exp_in_chunks``), so memory
    grows with neither k nor the batch. Chunk ``c`` of example ``e`` draws from
    ``fold_in(key_e, c)``: for a given chunk size the result does not depend on the batch.
    """
    checks.check_params(model, params)
    xb, keys, batched = batching.batch_and_keys(model, x, key)
    chunk_size, _ = chunking(model, params, k, chunk_size)

    def chunk_log_weights(group_x, group_keys, chunk):
        chunk_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(group_keys, chunk)
        return objectives.sample_log_weights(model, params, group_x, chunk_keys, chunk_size)

    group_size = max(1, batching.samples_per_chunk(model, params) // chunk_size)
    log_sum_w = batching.log_sum_exp_in_chunks(chunk_log_weights, xb, keys, k, chunk_size, group_size)
    return batching.unbatch(log_sum_w - math.log(k), batched)


def chunking(model, params, k, chunk_size=None):
    """``(chunk_size, num_chunks)`` that ``log_likelihood`` uses for ``k`` samples: the given
    chunk size, or else the fewest chunks of at most ``batching.samples_per_chunk`` samples (a
    chunk's decoder values then stay near the cache), evened out so the last wastes little."""
    checks.check_count("k", k)
    if chunk_size is None:
        budget = batching.samples_per_chunk(model, params)
        num_chunks = -(-k // budget)
        chunk_size = -(-k // num_chunks)
    chunk_size = min(checks.check_count("chunk_size", chunk_size), k)
    return chunk_size, -(-k // chunk_size)


def bits_per_dim(log_prob_nats, num_dims, *, dequantized=False):
    """Bits/dim = -log p(x) / (D ln 2).

    For a continuous density on uniformly dequantized 8-bit data scaled to [0, 1]
    (``dequantized=True``), D ln 256 is added to -log p first: each of the D values then
    sits in a bin of width 1/256, so P(bin) = p(x) / 256^D up to the dequantization gap.
    """
    checks.check_count("num_dims", num_dims)
    nll = -jnp.asarray(log_prob_nats, jnp.float32)
    if dequantized:
        nll = nll + num_dims * math.log(256.0)
    return nll / (num_dims * math.log(2.0))
