"""The densities a learned lossy codec codes its quantized latents under (Balle et al. 2018).

Both are densities of a *quantized* value, the mass of its unit bin, and their noisy relaxation
for training: with y~ = y + u, u ~ U(-1/2, 1/2), the density of y~ is the prior convolved with
the unit box, p(y~) = c(y~ + 1/2) - c(y~ - 1/2) for the prior's cumulative c; at integers it is
exactly the mass the entropy coder uses.

- ``factorized_*``: the hyper-latents' univariate density per channel, a cumulative built as a
  composition of monotone maps (Balle et al. 2018, appendix 6.1):
  c(x) = sigmoid(f_K(... f_1(x))), f_k(x) = g_k(H_k x + b_k), g_k(x) = x + tanh(a_k) * tanh(x),
  with H_k = softplus(raw H_k) > 0, so every f_k, hence c, increases.
- ``gaussian_bin_mass``: the latents' conditional, a Gaussian of mean mu and scale sigma (from the
  hyper-synthesis) convolved with the box: Phi((y - mu + 1/2) / sigma) - Phi((y - mu - 1/2) / sigma).

The factorized functions take an array module ``xp`` (``jax.numpy`` for training, ``numpy`` in
float64 for the codec's tables, which must come out the same on every machine).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

FILTERS = (3, 3, 3)  # the hidden sizes of each channel's cumulative (Balle et al. 2018)
INIT_SCALE = 10.0  # the density's initial width
MIN_MASS = 1e-9  # masses are floored here: -log2 of it (30 bits) is the most one value costs
SCALE_MIN = 0.11  # the Gaussian conditional's smallest scale (CompressAI's and tfc's bound)


def init_factorized(key, channels: int, filters=FILTERS, init_scale=INIT_SCALE) -> dict:
    """Parameters of ``channels`` independent cumulatives, started near a logistic of width
    ``init_scale``: each H_k at softplus^-1(1 / (scale * d_k+1)) with scale = init_scale^(1/(K)),
    biases uniform on [-1/2, 1/2], the tanh factors at 0."""
    dims = (1, *filters, 1)
    scale = init_scale ** (1.0 / (len(filters) + 1))
    params = {"matrices": [], "biases": [], "factors": []}
    keys = jax.random.split(key, len(dims) - 1)
    for k in range(len(dims) - 1):
        start = math.log(math.expm1(1.0 / scale / dims[k + 1]))
        params["matrices"].append(jnp.full((channels, dims[k + 1], dims[k]), start, jnp.float32))
        params["biases"].append(jax.random.uniform(keys[k], (channels, dims[k + 1], 1), jnp.float32, -0.5, 0.5))
        if k < len(dims) - 2:
            params["factors"].append(jnp.zeros((channels, dims[k + 1], 1), jnp.float32))
    return params


def _softplus(x, xp):
    return xp.logaddexp(x, 0.0)


def factorized_logits(params, x, xp=jnp):
    """logit c_c(x) for ``x`` of shape (channels, n): the cumulative's pre-sigmoid value, each row
    under its channel's density."""
    h = x[:, None, :]
    layers = len(params["matrices"])
    for k in range(layers):
        h = xp.matmul(_softplus(xp.asarray(params["matrices"][k]), xp), h) + xp.asarray(params["biases"][k])
        if k < layers - 1:
            h = h + xp.tanh(xp.asarray(params["factors"][k])) * xp.tanh(h)
    return h[:, 0, :]


def _bin_mass_from_logits(upper, lower, xp):
    """sigmoid(upper) - sigmoid(lower), computed on the side of 0 where it does not cancel: for
    bins in the upper tail, 1 - sigmoid(-l) form (sigmoid(-lower) - sigmoid(-upper))."""
    sign = -xp.sign(upper + lower)
    sigmoid = (lambda v: 1.0 / (1.0 + xp.exp(-v))) if xp is np else jax.nn.sigmoid
    return xp.abs(sigmoid(sign * upper) - sigmoid(sign * lower))


def factorized_bin_mass(params, x, xp=jnp):
    """p(x) = c(x + 1/2) - c(x - 1/2) for ``x`` of shape (..., channels), channel-last like the
    hyper-latents; floored at MIN_MASS."""
    channels = x.shape[-1]
    rows = xp.moveaxis(x, -1, 0).reshape(channels, -1)
    upper = factorized_logits(params, rows + 0.5, xp)
    lower = factorized_logits(params, rows - 0.5, xp)
    mass = _bin_mass_from_logits(upper, lower, xp)
    mass = xp.moveaxis(mass.reshape((channels, *x.shape[:-1])), 0, -1)
    return xp.maximum(mass, MIN_MASS)


def factorized_cdf(params, x, xp=np):
    """c_c(x) for ``x`` of shape (channels, n)."""
    logits = factorized_logits(params, x, xp)
    if xp is not np:
        return jax.nn.sigmoid(logits)
    with np.errstate(over="ignore"):  # exp(-logits) = inf far in the left tail, where the CDF is 0 as it should be
        return 1.0 / (1.0 + np.exp(-logits))


def standard_normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2, in JAX."""
    return 0.5 * jax.scipy.special.erfc(-x / math.sqrt(2.0))


def gaussian_bin_mass(y, mean, scale):
    """p(y | mu, sigma) = Phi((1/2 - |y - mu|) / sigma) - Phi((-1/2 - |y - mu|) / sigma), the mass of
    y's unit bin; the bin is folded onto the lower tail, where Phi does not round to 1. The scale
    is bounded below by SCALE_MIN and the mass by MIN_MASS."""
    scale = jnp.maximum(scale, SCALE_MIN)
    distance = jnp.abs(y - mean)
    mass = standard_normal_cdf((0.5 - distance) / scale) - standard_normal_cdf((-0.5 - distance) / scale)
    return jnp.maximum(mass, MIN_MASS)


def bits(mass):
    """-log2 of a mass: the ideal code length in bits."""
    return -jnp.log2(mass)
