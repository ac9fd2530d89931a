"""The discretized logistic's bounds, and every 8-bit value's probability under it in NumPy float64.

The JAX likelihoods score with ``distributions.discretized_logistic_log_prob``; a lossless coder
needs the same distributions as tables of 256 probabilities that its decoder can rebuild bit for
bit, so they are computed here in NumPy float64, each pixel's alone, with no compiler between the
encoder's numbers and the decoder's (XLA, even in float64, rounded a jitted and an eager run
differently: the likelihoods place the bin centres in float32, which it rounds differently fused).
"""

from __future__ import annotations

import numpy as np

# PixelCNN++ bounds the logistic log-scale from below: a narrower bin-width-relative scale
# only sharpens a distribution that already puts ~all its mass in one bin, and the bound
# keeps gradients finite early in training. The upper bound (a scale of e^5 ~ 150 times the
# whole [-1, 1] range, i.e. already flat) stops unused mixture components drifting to scales
# where every bin's probability underflows.
MIN_LOGISTIC_LOG_SCALE = -7.0
MAX_LOGISTIC_LOG_SCALE = 5.0

VALUES = 256
# The 255 boundaries between neighbouring 8-bit values on the likelihoods' [-1, 1] scale: value v's
# bin is [(2v - 1)/255 - 1, (2v + 1)/255 - 1], the first and last reaching out to -inf and +inf.
EDGES = (2.0 * np.arange(1, VALUES) - 1.0) / 255.0 - 1.0


def raster_rows(out):
    """A tile's decoder output (h, w, ...) as float64 rows, one per pixel in raster order."""
    out = np.asarray(out, np.float64)
    return out.reshape(-1, *out.shape[2:])


def centres(values):
    """The bin centres 2v/255 - 1 of 8-bit values, float64."""
    return 2.0 * np.asarray(values, np.float64) / 255.0 - 1.0


def logistic_bins(means, log_scales):
    """Every value's probability under logistics discretized into the 256 bins: (n,) -> (n, 256),
    P(v) = F(e_{v+1}) - F(e_v), F the logistic CDF, F(e_0) = 0, F(e_256) = 1."""
    inv_scales = np.exp(-np.clip(log_scales, MIN_LOGISTIC_LOG_SCALE, MAX_LOGISTIC_LOG_SCALE))
    with np.errstate(over="ignore"):  # exp(large) = inf gives a CDF of exactly 0, as it should
        cdf = 1.0 / (1.0 + np.exp((means[:, None] - EDGES) * inv_scales[:, None]))
    n = means.shape[0]
    return np.diff(np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1), axis=1)


def component_bins(means, log_scales):
    """Each component's discretized logistic: (n, K) -> (n, K, 256)."""
    return np.stack([logistic_bins(means[:, j], log_scales[:, j]) for j in range(means.shape[1])], 1)


def weighted_sum(log_weights, bins):
    """sum_k w_k P_k(v) for rows of K components' tables (n, K, 256) -> (n, 256), unnormalized:
    w_k = exp(log_weights_k - max_k), the components summed in order."""
    weights = np.exp(log_weights - np.max(log_weights, axis=1, keepdims=True))
    table = weights[:, :1] * bins[:, 0]
    for k in range(1, bins.shape[1]):
        table = table + weights[:, k : k + 1] * bins[:, k]
    return table


def mixture_bins(log_weights, means, log_scales):
    """The mixture of K discretized logistics (n, K) -> (n, 256), unnormalized (``weighted_sum``)."""
    return weighted_sum(log_weights, component_bins(means, log_scales))
