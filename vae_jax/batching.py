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

import jax
import jax.numpy as jnp

from vae_jax import checks

# How much one group may hold: decoder values (floats) over all its samples. The MLP's logits
# then stay near the cache (benchmarks, log_likelihood_chunks, measured this budget fastest).
CHUNK_BUDGET_FLOATS = 4096 * 5536


def batch_and_keys(model, x, key, name="x"):
    """``(batch, keys, batched)``: ``x`` as a batch, one key per example, and whether it was one."""
    checks.check_key("key", key)
    batched = checks.check_data(name, x, model.likelihood.input_kind, model.data_shape)
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
    z = jnp.zeros((1, *model.latent_shape), jnp.float32)
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
