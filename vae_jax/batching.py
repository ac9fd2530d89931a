"""One example or a batch, one key per example, and a batch evaluated a group at a time.

Every public function of the core accepts one example ``x`` of shape ``model.data_shape`` or a
batch ``(B, *data_shape)``. ``batch_and_keys`` turns either into a batch with one key per
example (a batch's key is split into B keys; one example uses its key as given), so ``jax.vmap``
of the single-example call over ``jax.random.split(key, B)`` equals the batched call;
``unbatch`` undoes the batching on the results.

Estimators that draw many samples per example (``iwae_bound``, ``log_likelihood``) hold
``group * samples`` decoder outputs at once. ``map_in_groups`` evaluates them a group of
examples at a time inside ``lax.map``, so memory follows the group, never the batch, and
``examples_per_group`` sizes the group from what the decoder computes per sample.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from vae_jax import checks

# How much one group may hold: decoder values (floats) over all its samples. The MLP's logits
# then stay near the cache (the log_likelihood_chunks benchmark compares budgets).
CHUNK_BUDGET_FLOATS = 4096 * 5536


def batch_and_keys(model, x, key, name="x"):
    """``(batch, keys, batched)``: ``x`` as a batch, one key per example, and whether it was one."""
    checks.check_key("key", key)
    x, batched = checks.checked_data(name, x, model.likelihood.input_kind, model.data_shape)
    x = jnp.asarray(x)
    if not batched:
        return x[None], key[None], False
    return x, jax.random.split(key, x.shape[0]), True


def unbatch(tree, batched):
    """The first example of every leaf when the input was one example; the tree otherwise."""
    return tree if batched else jax.tree_util.tree_map(lambda a: a[0], tree)


def decoder_floats_per_sample(model, params) -> int:
    """Values the decoder computes for one latent sample: the sum of the sizes of every
    intermediate in its traced program (a proxy for the memory a sample moves)."""
    z = jax.tree_util.tree_map(lambda t: jnp.zeros((1, *t.shape), t.dtype), model.latent_template)
    jaxpr = jax.make_jaxpr(lambda p: model.decoder_output(p, z))(params)
    return sum(math.prod(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars)


def samples_per_chunk(model, params) -> int:
    """Latent samples one group may hold: ``CHUNK_BUDGET_FLOATS`` worth of decoder values."""
    return max(1, CHUNK_BUDGET_FLOATS // decoder_floats_per_sample(model, params))


def map_in_groups(fn, arrays, group_size: int):
    """``fn`` over the leading axis of ``arrays`` (a tuple of equal-length arrays), evaluated
    ``group_size`` examples at a time in a ``lax.map``; the results are concatenated back.

    Groups are made as even as possible and the last one is padded with copies of the last
    example, whose results are dropped. ``fn`` must map each example independently of the
    others in its group, so the result does not depend on the grouping.
    """
    chex.assert_equal_shape_prefix(arrays, 1)
    batch = arrays[0].shape[0]
    num_groups = -(-batch // max(1, group_size))
    if num_groups == 1:
        return fn(arrays)
    group_size = -(-batch // num_groups)
    pad = num_groups * group_size - batch
    grouped = tuple(
        jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]).reshape(num_groups, group_size, *a.shape[1:])
        for a in arrays
    )
    results = jax.lax.map(fn, grouped)
    return jax.tree_util.tree_map(lambda r: r.reshape(-1, *r.shape[2:])[:batch], results)


def log_sum_exp_in_chunks(chunk_log_weights, xb, keys, total, chunk_size, group_size):
    """log sum_{i < total} w_i per example, the log-weights drawn ``chunk_size`` at a time:
    ``chunk_log_weights(x, keys, c)`` gives chunk c's (B, chunk_size) of a group of examples.

    The chunks run in a ``lax.scan`` folded into a running log-sum-exp (the last chunk's
    samples past ``total`` get weight zero), a group of ``group_size`` examples at a time.
    """
    num_chunks = -(-total // chunk_size)

    def group_total(group):
        group_x, group_keys = group

        def add_chunk(running, chunk):
            log_w = chunk_log_weights(group_x, group_keys, chunk)
            chex.assert_shape(log_w, (group_x.shape[0], chunk_size))
            log_w = jnp.where(chunk * chunk_size + jnp.arange(chunk_size) < total, log_w, -jnp.inf)
            return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=-1)), None

        start = jnp.full((group_x.shape[0],), -jnp.inf, jnp.float32)
        return jax.lax.scan(add_chunk, start, jnp.arange(num_chunks))[0]

    return map_in_groups(group_total, (xb, keys), group_size)
