"""Closed forms for the linear-Gaussian VAE (``architectures.linear_gaussian``).

With p(z) = N(0, I) and p(x|z) = N(W z + b, s^2 I):
  p(x)   = N(x; b, W W^T + s^2 I),
  p(z|x) = N(Sigma W^T (x - b) / s^2, Sigma),   Sigma = (I + W^T W / s^2)^-1.
These let any estimator be checked against the truth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checks
from vae_jax.networks.activations import LOG_VAR_BOUND, soft_clamp_inverse


def _decoder_weights(model, params):
    """W (data_dim, latent_dim), b (data_dim,), s^2 of the linear-Gaussian decoder."""
    if model.decoder.hidden or model.encoder.hidden or model.likelihood.obs_var is None:
        raise ValueError("expected a linear-Gaussian model from vae_jax.linear_gaussian(...)")
    out = params["decoder"]["out"]
    return out["kernel"].T, out["bias"], model.likelihood.obs_var


def exact_log_marginal(model, params, x):
    """log p(x) = log N(x; b, W W^T + s^2 I) per example, nats."""
    batched = checks.batch_rank("x", x, model.data_shape)
    w, b, obs_var = _decoder_weights(model, params)
    covariance = w @ w.T + obs_var * jnp.eye(w.shape[0])
    chol = jnp.linalg.cholesky(covariance)
    xb = jnp.atleast_2d(jnp.asarray(x, jnp.float32)) - b
    whitened = jax.scipy.linalg.solve_triangular(chol, xb.T, lower=True)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    result = -0.5 * (w.shape[0] * math.log(2 * math.pi) + log_det + jnp.sum(whitened**2, axis=0))
    return result if batched else result[0]


def exact_posterior(model, params, x):
    """Mean (B, latent) and covariance (latent, latent) of p(z|x)."""
    w, b, obs_var = _decoder_weights(model, params)
    covariance = jnp.linalg.inv(jnp.eye(w.shape[1]) + w.T @ w / obs_var)
    mean = (jnp.atleast_2d(jnp.asarray(x, jnp.float32)) - b) @ w @ covariance / obs_var
    return mean, covariance


def optimal_encoder_params(model, params):
    """Encoder params that make q(z|x) = p(z|x) exactly, with the ELBO then equal to log p(x).

    Needs a diagonal posterior covariance, i.e. orthogonal columns of W; otherwise no
    diagonal-Gaussian encoder is exact and this raises.
    """
    w, b, obs_var = _decoder_weights(model, params)
    gram = np.asarray(w.T @ w)
    if not np.allclose(gram, np.diag(np.diag(gram)), atol=1e-5 * max(1.0, np.abs(gram).max())):
        raise ValueError("W^T W is not diagonal: the exact posterior is not a diagonal Gaussian")
    covariance = jnp.linalg.inv(jnp.eye(w.shape[1]) + w.T @ w / obs_var)
    gain = w @ covariance / obs_var  # mean = (x - b) @ gain
    log_var = jnp.log(jnp.diag(covariance))
    if float(jnp.max(jnp.abs(log_var))) >= LOG_VAR_BOUND:
        raise ValueError(
            f"posterior log-variances {log_var} lie outside the encoder's range +-{LOG_VAR_BOUND}"
        )
    return {
        "mean": {"kernel": gain, "bias": -b @ gain},
        # The encoder soft-clamps its log-variance output; invert that so q is exact.
        "log_var": {"kernel": jnp.zeros_like(gain), "bias": soft_clamp_inverse(log_var)},
    }
