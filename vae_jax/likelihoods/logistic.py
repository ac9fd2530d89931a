"""The discretized logistic's bounds, and every 8-bit value's probability under it in NumPy float64.

The JAX likelihoods score with ``distributions.discretized_logistic_log_prob``; a lossless coder
needs the same distributions as tables of 256 probabilities that its decoder can rebuild bit for
bit, so they are computed here in NumPy float64, each pixel's alone, with no compiler between the
encoder's numbers and the decoder's (XLA, even in float64, rounded a jitted and an eager run
differently: the likelihoods place the bin centres in float32, which it rounds differently fused).
"""

from __future__ import annotations

from typing import NamedTuple

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


# exp((m - e_v) / s) at v = 8a + j is exp((m - e_8a) / s) exp(-j (2/255) / s): 32 + 8 exps for
# the 255 edges instead of 255 (exp is most of a table's cost), each value the product of two.
_STRIDE = 8
_COARSE_EDGES = EDGES[::_STRIDE]  # 32 edges: e_0, e_8, .., e_248
_FINE_STEPS = np.arange(_STRIDE) * (2.0 / 255.0)


def _inverse_scales(log_scales):
    """1 / s = exp(-log s), the log-scale clipped to the likelihoods' bounds (np.minimum and
    np.maximum, the very numbers of np.clip without its per-call cost: the coder calls this
    thousands of times on small arrays)."""
    return np.exp(-np.minimum(np.maximum(log_scales, MIN_LOGISTIC_LOG_SCALE), MAX_LOGISTIC_LOG_SCALE))


def _clipped(arguments):
    """exp's arguments clipped to [-745, 700]: no overflow, and F within 1e-300 of 0 or 1 unmoved."""
    return np.minimum(np.maximum(arguments, -745.0), 700.0)


def logistic_bins(means, log_scales):
    """Every value's probability under logistics discretized into the 256 bins: (...) -> (..., 256),
    P(v) = F(e_{v+1}) - F(e_v), F the logistic CDF, F(e_0) = 0, F(e_256) = 1, e_1..e_255 ``EDGES``.
    F(e) = 1 / (1 + exp((m - e) / s)), the exponential as a product of two (``_STRIDE``); its
    arguments clipped to [-745, 700], which moves only values of F within 1e-300 of 0 or 1.
    Within 1e-13 of the direct formula; what matters is that it is the same NumPy float64 for
    encoder and decoder."""
    means, log_scales = np.asarray(means, np.float64), np.asarray(log_scales, np.float64)
    inv_scales = _inverse_scales(log_scales)[..., None]
    coarse = np.exp(_clipped((means[..., None] - _COARSE_EDGES) * inv_scales))
    fine = np.exp(-_FINE_STEPS * inv_scales)
    cdf = (coarse[..., :, None] * fine[..., None, :]).reshape(*means.shape, VALUES)
    cdf += 1.0
    np.reciprocal(cdf, out=cdf)
    cdf[..., -1] = 1.0  # the 256th product lies past the last edge: F there is 1
    bins = np.empty_like(cdf)
    bins[..., 0] = cdf[..., 0]
    np.subtract(cdf[..., 1:], cdf[..., :-1], out=bins[..., 1:])
    return np.maximum(bins, 0.0, out=bins)  # the products' rounding can leave -1e-278 where F is flat


# A value v is also coded in two steps (``cell_table``, ``within_table``): its cell v // 8 among the
# 32 cells of 8 values, then v % 8 within it. The same distribution, P(v) = P(cell) P(v | cell),
# for 31 + 7 edges' CDF a value instead of a 256-value table's every edge and difference.
CELL_VALUES = 8
CELLS = VALUES // CELL_VALUES
_CELL_EDGES = EDGES[CELL_VALUES - 1 :: CELL_VALUES]  # the 31 edges between cells: e_8, e_16, .., e_248
_INNER_EDGES = np.arange(CELL_VALUES - 1)  # cell a's 7 inner edges are EDGES[8a + 0 .. 8a + 6]


class CellCoding(NamedTuple):
    """n logistics as the two-step coder reads them: their means and inverse scales (n, 1), and F at
    the cells' bounds (n, 33): F(-inf) = 0, F(e_8), F(e_16), .., F(e_248), F(inf) = 1."""

    means: np.ndarray
    inv_scales: np.ndarray
    cdf: np.ndarray


def _cdf_at(edges, means, inv_scales, out):
    """F(e) = 1 / (1 + exp((m - e) / s)) at ``edges`` into ``out``, exp's arguments clipped."""
    np.reciprocal(1.0 + np.exp(_clipped((means - edges) * inv_scales)), out=out)


def cell_coding(means, log_scales) -> CellCoding:
    """``CellCoding`` of logistics with ``means`` and ``log_scales`` (n,)."""
    means = np.asarray(means, np.float64)[:, None]
    inv_scales = _inverse_scales(np.asarray(log_scales, np.float64))[:, None]
    cdf = np.empty((len(means), CELLS + 1))
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    _cdf_at(_CELL_EDGES, means, inv_scales, cdf[:, 1:-1])
    return CellCoding(means, inv_scales, cdf)


def _differences(cdf):
    """The masses between neighbouring CDF values, at least 0 (F's rounding): (n, m) -> (n, m - 1)."""
    table = np.subtract(cdf[:, 1:], cdf[:, :-1])
    return np.maximum(table, 0.0, out=table)


def cell_table(coding: CellCoding):
    """P(cell a) = F(upper bound) - F(lower bound) per cell: (n, 32)."""
    return _differences(coding.cdf)


def within_table(coding: CellCoding, cells):
    """P(v = 8a + j | cell a), unnormalized, j = 0..7, of each row's cell a (n,): F at the cell's 7
    inner edges between its bounds, differenced: (n, 8). A cell of less than 1e-250 mass (its
    value then cost 24 bits in the cell step already) is uniform: the coder's normalization must
    not divide by a subnormal."""
    cells = np.asarray(cells, np.intp)
    rows = np.arange(len(cells))
    bounds = np.empty((len(cells), CELL_VALUES + 1))
    bounds[:, 0], bounds[:, -1] = coding.cdf[rows, cells], coding.cdf[rows, cells + 1]
    _cdf_at(EDGES[CELL_VALUES * cells[:, None] + _INNER_EDGES], coding.means, coding.inv_scales, bounds[:, 1:-1])
    table = _differences(bounds)
    table[bounds[:, -1] - bounds[:, 0] < 1e-250] = 1.0
    return table


def two_step_bins(means, log_scales):
    """Every value's probability as ``cell_table`` and ``within_table`` code it, P(cell) P(v | cell):
    (n,) -> (n, 256), the cells in order (what a test compares with ``logistic_bins``)."""
    coding = cell_coding(means, log_scales)
    cells = cell_table(coding)
    columns = []
    for a in range(CELLS):
        within = within_table(coding, np.full(len(cells), a))
        columns.append(cells[:, a : a + 1] * within / np.sum(within, axis=1, keepdims=True))
    return np.concatenate(columns, axis=1)


def logistic_mass(values, means, log_scales):
    """P(v) of 8-bit ``values`` (n,) under each of the logistics (n, K) discretized into the 256 bins:
    F(e_{v+1}) - F(e_v) as in ``logistic_bins`` (F(e_0) = 0, F(e_256) = 1), (n, K)."""
    inv_scales = _inverse_scales(log_scales)
    v = np.asarray(values, np.intp)[:, None]
    lower_edge, upper_edge = EDGES[np.maximum(v - 1, 0)], EDGES[np.minimum(v, VALUES - 2)]
    cdf = lambda edge: 1.0 / (1.0 + np.exp(_clipped((means - edge) * inv_scales)))
    upper = np.where(v == VALUES - 1, 1.0, cdf(upper_edge))
    lower = np.where(v == 0, 0.0, cdf(lower_edge))
    return np.maximum(upper - lower, 0.0)


def component_bins(means, log_scales):
    """Each component's discretized logistic: (n, K) -> (n, K, 256)."""
    return logistic_bins(means, log_scales)


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
