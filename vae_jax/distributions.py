"""Log-densities, KL divergences and reparameterized samplers.

Every function here is elementwise: it returns an array of the broadcast shape of its
inputs, and the caller sums over the event axes it means. That keeps each function one
equation and lets the same code serve a pixel, an image or a batch.

Discretized likelihoods see 8-bit pixel values ``x in {0, ..., 255}`` (integers, or floats
holding integers). Internally they are mapped to bin centres ``(2 x / 255) - 1`` in
``[-1, 1]`` with bin half-width ``1 / 255``, as in PixelCNN++ (Salimans et al. 2017).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)
_HALF_BIN = 1.0 / 255.0


def sum_over_event(values, batch_ndim=1):
    """Sum an elementwise result over every axis after the first ``batch_ndim``: one number per example."""
    return jnp.sum(values, axis=tuple(range(batch_ndim, jnp.ndim(values))))


def diag_gaussian_log_prob(x, mean, log_var):
    """log N(x; mean, exp(log_var)) = -(log 2pi + log_var + (x - mean)^2 / var) / 2."""
    return -0.5 * (LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))


def standard_normal_log_prob(z):
    """log N(z; 0, 1) = -(log 2pi + z^2) / 2."""
    return -0.5 * (LOG_2PI + jnp.square(z))


def diag_gaussian_sample(mean, log_var, key):
    """Reparameterized draw z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""
    eps = jax.random.normal(key, jnp.shape(mean), dtype=jnp.result_type(mean, jnp.float32))
    return mean + jnp.exp(0.5 * log_var) * eps


def fold_in_each(keys, index):
    """fold_in(keys[e], index) for every example's key e: the key of part ``index`` (a latent
    group, a layer) of each example."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, index)


def gaussian_draws(mean, log_var, keys, temperature=1.0):
    """One reparameterized draw per example, from its own key:
    z_e = mean_e + temperature * exp(log_var_e / 2) * eps_e, eps_e ~ N(0, I) from keys[e]."""
    eps = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:], jnp.float32))(keys)
    return mean + temperature * jnp.exp(0.5 * log_var) * eps


def kl_diag_gaussians(mean_q, log_var_q, mean_p, log_var_p):
    """KL(N(mean_q, var_q) || N(mean_p, var_p)), per dimension:

    (log_var_p - log_var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1) / 2.
    """
    return 0.5 * (
        log_var_p - log_var_q + (jnp.exp(log_var_q) + jnp.square(mean_q - mean_p)) * jnp.exp(-log_var_p) - 1.0
    )


def kl_standard_normal(mean, log_var):
    """KL(N(mean, var) || N(0, 1)) = (mean^2 + var - log_var - 1) / 2, per dimension."""
    return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0)


def bernoulli_log_prob(x, logits):
    """log Bern(x; sigmoid(logits)) = x * logits - log(1 + exp(logits)).

    log(1 + exp(l)) is computed as max(l, 0) + log1p(exp(-|l|)): finite for every finite logit
    (no overflow, no log(0)), and without the NaN/inf selects of ``jnp.logaddexp``, an extra
    pass over every logit (see the log_likelihood rows of the benchmarks).
    """
    softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return x * logits - softplus


def _log_sigmoid(u):
    return -jax.nn.softplus(-u)


def _log_one_minus_exp(a):
    """log(1 - exp(a)) for a < 0, accurate on both sides of -log 2 (Maechler 2012).

    Each branch sees only inputs it is accurate for (the other gets a harmless -1), so the
    branch ``where`` discards cannot put a NaN into the gradient.
    """
    near_zero = a > -math.log(2.0)
    near = jnp.where(near_zero, a, -1.0)
    far = jnp.where(near_zero, -1.0, a)
    return jnp.where(near_zero, jnp.log(-jnp.expm1(near)), jnp.log1p(-jnp.exp(far)))


def discretized_logistic_log_prob(x, mean, log_scale):
    """log P(x) for an 8-bit value under a logistic(mean, scale) discretized into 256 bins.

    With c = 2x/255 - 1, s = exp(log_scale), a = (c + 1/255 - mean)/s, b = (c - 1/255 - mean)/s:
      P(x) = sigmoid(a) - sigmoid(b)      for 0 < x < 255,
      P(0) = sigmoid(a),  P(255) = 1 - sigmoid(b)   (the edge bins take the tails).
    The interior difference is evaluated as
      sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(-(a - b))),
    an identity whose three factors are each computed without cancellation, so the
    result is exact in both tails and for very narrow or very wide scales.
    """
    x = jnp.asarray(x, jnp.float32)
    centre = 2.0 * x / 255.0 - 1.0
    inv_scale = jnp.exp(-log_scale)
    a = (centre + _HALF_BIN - mean) * inv_scale
    b = (centre - _HALF_BIN - mean) * inv_scale
    log_cdf_upper = _log_sigmoid(a)
    log_survival_lower = _log_sigmoid(-b)
    log_bin_factor = _log_one_minus_exp(-2.0 * _HALF_BIN * inv_scale)
    interior = log_cdf_upper + log_survival_lower + log_bin_factor
    return jnp.where(x <= 0, log_cdf_upper, jnp.where(x >= 255, log_survival_lower, interior))


def discretized_logistic_mixture_log_prob(x, logit_weights, means, log_scales):
    """log sum_k pi_k P_k(x), P_k the discretized logistic of component k.

    ``x`` has shape ``S``; the mixture parameters have shape ``S + (K,)`` and
    pi = softmax(logit_weights) over the last axis. Each sub-pixel has its own mixture
    (no autoregression across channels, unlike PixelCNN++).
    """
    component_log_probs = discretized_logistic_log_prob(x[..., None], means, log_scales)
    return jax.nn.logsumexp(jax.nn.log_softmax(logit_weights, axis=-1) + component_log_probs, axis=-1)


def logistic_sample(mean, log_scale, key):
    """Draw from logistic(mean, scale) by inverting its CDF: mean + s * log(u / (1 - u))."""
    u = jax.random.uniform(key, jnp.shape(mean), minval=1e-6, maxval=1.0 - 1e-6)
    return mean + jnp.exp(log_scale) * (jnp.log(u) - jnp.log1p(-u))


def to_8bit(centre_values):
    """Map values on the [-1, 1] bin-centre scale to the nearest 8-bit integer, clipped."""
    return jnp.clip(jnp.round((centre_values + 1.0) * 127.5), 0, 255).astype(jnp.int32)


def mixture_of_diag_gaussians_log_prob(z, logit_weights, means, log_vars):
    """log sum_k pi_k N(z; mean_k, diag var_k), summed over the event axes of ``z``.

    ``z`` has event shape ``E``; ``means`` and ``log_vars`` have shape ``(K,) + E``;
    ``logit_weights`` has shape ``(K,)``. Returns a scalar per ``z``.
    """
    event_axes = tuple(range(1, means.ndim))
    component = jnp.sum(diag_gaussian_log_prob(z[None], means, log_vars), axis=event_axes)
    return jax.nn.logsumexp(jax.nn.log_softmax(logit_weights) + component)
