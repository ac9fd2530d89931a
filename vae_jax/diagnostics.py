"""Diagnostics: how many latent units a model uses, and where its bits go.

- ``active_units``: Burda et al. (2015, sec. 5.2): unit u is active if
  A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, the spread over the data of the posterior means.
- ``kl_per_group``: each latent group's mean KL, in nats, bits/dim and share of the total.
- ``bits_per_dim_split``: -ELBO in bits/dim, split into reconstruction and KL (per group).

All work on any ``vae_jax.model.LatentVariableModel``; for a hierarchy, ``active_units``
measures every group, each along the path of posterior means (what ``encode`` returns).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checks
from vae_jax.evaluation import bits_per_dim
from vae_jax.objectives import elbo_terms


class ActiveUnits(NamedTuple):
    """count: number of active units (all groups); activity: A_u per unit and active: A_u >
    threshold, each shaped like the latent (one array per group)."""

    count: int
    activity: np.ndarray
    active: np.ndarray


class KLPerGroup(NamedTuple):
    """Per group, in top-down order, the batch mean of KL_g: in nats, in bits/dim
    (KL_g / (D ln 2)), and as a fraction of the total KL."""

    nats: jax.Array
    bits_per_dim: jax.Array
    fraction: jax.Array


@partial(jax.jit, static_argnums=0)
def _posterior_means(model, params, x):
    return model.posterior(params, x)[0]


def _as_batches(model, data):
    """One array of examples (N, *data_shape), or an iterable of such batches."""
    if hasattr(data, "shape") and len(np.shape(data)) == len(model.data_shape) + 1:
        return [data]
    if hasattr(data, "shape"):
        raise ValueError(
            f"x_batches_or_x: expected a batch (N, *{tuple(model.data_shape)}) or an iterable of batches, "
            f"got an array of shape {np.shape(data)}"
        )
    return data


def posterior_mean_activity(model, params, x_batches_or_x):
    """A_u = Var_x(E_q[z_u]) over all examples (population variance, 1/N), streamed.

    Batches are merged with Chan et al.'s (1979) pairwise update of (count, mean, M2) in
    float64, so the result does not depend on how the data is split and does not lose
    precision to the cancellation of E[m^2] - E[m]^2.
    """
    states, structure = None, None
    for batch in _as_batches(model, x_batches_or_x):
        checks.check_data("x_batches_or_x", batch, model.likelihood.input_kind, model.data_shape)
        leaves, structure = jax.tree_util.tree_flatten(_posterior_means(model, params, jnp.asarray(batch)))
        states = [_merge(state, np.asarray(leaf, np.float64)) for state, leaf in zip(states or [(0, 0.0, 0.0)] * len(leaves), leaves)]
    count = states[0][0] if states else 0
    if count < 2:
        raise ValueError(f"x_batches_or_x: expected at least 2 examples to measure a variance, got {count}")
    return jax.tree_util.tree_unflatten(structure, [m2 / count for _, _, m2 in states])


def _merge(state, batch):
    """Chan et al.'s update of (count, mean, M2) by a batch of rows."""
    count, mean, m2 = state
    size, batch_mean = batch.shape[0], batch.mean(axis=0)
    total, delta = count + size, batch_mean - mean
    return total, mean + delta * size / total, m2 + np.sum(np.square(batch - batch_mean), axis=0) + np.square(delta) * count * size / total


def active_units(model, params, x_batches_or_x, *, threshold=0.01) -> ActiveUnits:
    """Units u with A_u = Cov_x(E_{q(z|x)}[z_u]) > ``threshold`` (Burda et al. 2015).

    An inactive unit's posterior mean is the same for every x: it carries no information
    about x (its KL is typically ~0, the posterior having collapsed onto the prior).
    """
    activity = posterior_mean_activity(model, params, x_batches_or_x)
    active = jax.tree_util.tree_map(lambda a: a > threshold, activity)
    return ActiveUnits(int(sum(a.sum() for a in jax.tree_util.tree_leaves(active))), activity, active)


def kl_per_group(model, params, x, key) -> KLPerGroup:
    """Mean over the batch of each group's KL_g (one draw of the path z ~ q for hierarchies)."""
    terms = elbo_terms(model, params, x, key)
    nats = jnp.stack([jnp.mean(kl) for kl in terms.kl_groups])
    total = jnp.sum(nats)
    fraction = jnp.where(total != 0, nats / jnp.where(total != 0, total, 1.0), jnp.nan)
    return KLPerGroup(nats, bits_per_dim(-nats, math.prod(model.data_shape)), fraction)


def bits_per_dim_split(model, params, x, key, *, dequantized=False):
    """Batch means of -ELBO in bits/dim and its two parts, from one draw z ~ q per example:

      total_bpd = reconstruction_bpd + kl_bpd,
      reconstruction_bpd = -E_q[log p(x|z)] / (D ln 2)  (+ 8 if ``dequantized``: D ln 256 nats),
      kl_bpd = KL / (D ln 2) = sum_g kl_bpd_groups[g].

    ``dequantized=True`` is for a continuous density on uniformly dequantized 8-bit data in
    [0, 1] (a ``"unit"`` likelihood); the term is added by ``evaluation.bits_per_dim``.
    """
    if dequantized and model.likelihood.input_kind not in ("unit", "real"):
        raise ValueError(
            f"dequantized: only a continuous likelihood (a density) sees dequantized data; "
            f"this model's likelihood takes {model.likelihood.input_kind!r} input"
        )
    terms = elbo_terms(model, params, x, key)
    num_dims = math.prod(model.data_shape)
    kl_bpd_groups = tuple(jnp.mean(bits_per_dim(-kl, num_dims)) for kl in terms.kl_groups)
    return {
        "reconstruction_bpd": jnp.mean(bits_per_dim(terms.reconstruction, num_dims, dequantized=dequantized)),
        "kl_bpd": jnp.mean(bits_per_dim(-terms.kl, num_dims)),
        "total_bpd": jnp.mean(
            bits_per_dim(terms.reconstruction - terms.kl, num_dims, dequantized=dequantized)
        ),
        "kl_bpd_groups": kl_bpd_groups,
    }
