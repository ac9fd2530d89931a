"""Starting a decoder's likelihood where the data already is: the least-squares fit of each
sub-pixel from the context its likelihood conditions on, with z ignored.

A decoder's last layer starts with zero bias, so p(x|z) starts as a logistic of scale 1 (half
the whole [-1, 1] range) around 0 with neighbour coefficients 0: about 8 bits per sub-pixel.
Adam moves a bias by about one learning rate per step, so the log-scales (-4 for a photograph's
residuals) and the neighbour coefficients (near 0.8) take thousands of steps to arrive, and
every step before that is spent learning what any photograph says: a pixel is close to its
neighbours. ``output_bias="fit"`` starts the last layer's bias at that fit instead:

  x_c ~ o_c + sum_n a_nc x_c(n) + sum_{c' < c} (b_cc' x_c' + d_nc'c x_c'(n)) + e_c,
  (o, a, b, d) = argmin sum e^2,

over training crops, in the likelihood's bin-centre units 2x/255 - 1, n over the causal
neighbours a local likelihood reads (none for the others), c' over the earlier channels a
coupled likelihood reads (none for the independent mixture), d only for the cross-channel
local likelihood (summed over n too). The logistic scale comes from the
residuals' mean absolute value (E|e| = 2 s ln 2 for a logistic of scale s), and the K mixture
components get scales spread around it, e^(-1) s to e s for K = 5 (residuals of photographs
are heavy-tailed: a scale mixture fits them better than one scale). Likelihoods without a
context start at each channel's statistics: the Bernoulli at the logit of the mean intensity
x / 255 (a dynamic binarization's expectation), the Gaussian at the mean and variance of the
dequantized values (x + 1/2) / 256 (plus the dequantization noise's 1/12 bin^2).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vae_jax.likelihoods import (
    CAUSAL_NEIGHBOURS,
    CROSS_CHANNEL_PAIRS,
    causal_neighbour_centres,
    registered_name,
)

# The log-scales of the K components are the fitted one plus (k - (K - 1) / 2) times this.
COMPONENT_LOG_SCALE_SPREAD = 0.5
# tanh parameterises the coefficients; a fitted 1 (a copy of the neighbour) would need an
# infinite bias.
MAX_COEFFICIENT = 0.95


@dataclasses.dataclass(frozen=True)
class ContextFit:
    """The per-channel least-squares predictor: ``offsets`` (C,), ``neighbours`` (N, C) (a_nc,
    ``CAUSAL_NEIGHBOURS`` order), ``previous`` (C, C) (b_cc', zero on and above the diagonal),
    ``cross`` (N, 3) (d_nc'c, pairs in ``CROSS_CHANNEL_PAIRS`` order; zero unless fitted) and
    ``log_scales`` (C,) of the logistic that fits the residuals."""

    offsets: np.ndarray
    neighbours: np.ndarray
    previous: np.ndarray
    cross: np.ndarray
    log_scales: np.ndarray


def _checked(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty (N, H, W, C) batch, got shape {images.shape}")
    if not (np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255):
        raise ValueError(f"images: expected 8-bit integers in [0, 255], got {images.dtype} in [{images.min()}, {images.max()}]")
    return images.astype(np.float64)


def fit_context(images, *, neighbours: bool, previous_channels: bool, cross_channel: bool = False) -> ContextFit:
    """The least-squares predictor above over 8-bit ``images`` (N, H, W, C), float64
    (``cross_channel``: with the earlier channels' neighbours; RGB, with both other contexts)."""
    x = 2.0 * _checked(images) / 255.0 - 1.0
    channels = x.shape[-1]
    if cross_channel and (channels != 3 or not (neighbours and previous_channels)):
        raise ValueError(
            f"cross_channel: fits RGB images with neighbours and previous channels, got {channels} channels, "
            f"neighbours={neighbours}, previous_channels={previous_channels}"
        )
    num_neighbours = len(CAUSAL_NEIGHBOURS)
    # (N, H, W, C, 4), 0 outside the image: the values the local likelihood reads.
    around = np.asarray(causal_neighbour_centres(images), np.float64) if neighbours else None
    fit = ContextFit(
        np.zeros(channels),
        np.zeros((num_neighbours, channels)),
        np.zeros((channels, channels)),
        np.zeros((num_neighbours, len(CROSS_CHANNEL_PAIRS))),
        np.zeros(channels),
    )
    for c in range(channels):
        pairs = [p for p, (_, target) in enumerate(CROSS_CHANNEL_PAIRS) if target == c] if cross_channel else []
        columns = [np.ones(x[..., c].size)]
        if neighbours:
            columns += [around[..., c, n].ravel() for n in range(num_neighbours)]
        if previous_channels:
            columns += [x[..., earlier].ravel() for earlier in range(c)]
        for p in pairs:
            columns += [around[..., CROSS_CHANNEL_PAIRS[p][0], n].ravel() for n in range(num_neighbours)]
        design, target = np.stack(columns, axis=1), x[..., c].ravel()
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        fit.offsets[c] = solution[0]
        used = 1
        if neighbours:
            fit.neighbours[:, c] = solution[used : used + num_neighbours]
            used += num_neighbours
        if previous_channels:
            fit.previous[c, :c] = solution[used : used + c]
            used += c
        for p in pairs:
            fit.cross[:, p] = solution[used : used + num_neighbours]
            used += num_neighbours
        mean_absolute = np.mean(np.abs(target - design @ solution))
        # Floor at a tenth of a bin: a constant channel has no residual to measure.
        fit.log_scales[c] = np.log(max(mean_absolute, 0.1 / 255.0) / (2.0 * np.log(2.0)))
    return fit


def _component_log_scales(log_scales, k):
    spread = (np.arange(k) - (k - 1) / 2.0) * COMPONENT_LOG_SCALE_SPREAD
    return log_scales[:, None] + spread[None, :]  # (C, K)


def _coefficient_logits(coefficients):
    return np.arctanh(np.clip(coefficients, -MAX_COEFFICIENT, MAX_COEFFICIENT))


# The fit of each registered likelihood, by its name (``_fit_for``): each knows its likelihood's layout.
_FITS = {}


def _fit_for(*names):
    def add(fit):
        _FITS.update(dict.fromkeys(names, fit))
        return fit

    return add


def fitted_output_bias(likelihood, images) -> np.ndarray:
    """The decoder output, for one pixel, under which ``likelihood`` is the fitted predictor of
    ``images`` (8-bit, (N, H, W, C)) for every component: a vector of the length of the last axes
    of ``likelihood.params_shape``, flattened. The mixture logits are 0 (equal weights)."""
    fit = _FITS.get(registered_name(likelihood))
    if fit is None:
        raise ValueError(f"output_bias: 'fit' has no fit for the likelihood {likelihood} (fits: {', '.join(_FITS)})")
    return fit(likelihood, images)


@_fit_for("coupled", "local", "local-cross")
def _coupled_family_bias(likelihood, images):
    """The channel-coupled mixtures, each from the context it declares: its earlier channels, and
    (local) the same channel's neighbours, and (cross-channel) the earlier channels' neighbours."""
    neighbours = bool(likelihood.context.neighbours)
    cross_channel = bool(likelihood.context.earlier_channel_neighbours)
    fit = fit_context(images, neighbours=neighbours, previous_channels=True, cross_channel=cross_channel)
    return _coupled_bias(likelihood.num_components, fit, neighbours=neighbours, cross_channel=cross_channel)


@_fit_for("dlm")
def _mixture_bias(likelihood, images):
    k = likelihood.num_components
    fit = fit_context(images, neighbours=False, previous_channels=False)
    means = np.repeat(fit.offsets[:, None], k, axis=1)
    per_channel = np.concatenate([np.zeros_like(means), means, _component_log_scales(fit.log_scales, k)], axis=1)
    return per_channel.ravel()  # (C, 3K): logits, means, log-scales of each sub-pixel


@_fit_for("logistic")
def _logistic_bias(likelihood, images):
    fit = fit_context(images, neighbours=False, previous_channels=False)
    return np.stack([fit.offsets, fit.log_scales], axis=1).ravel()  # (C, 2): mean, log-scale


@_fit_for("bernoulli")
def _bernoulli_bias(likelihood, images):
    mean = np.clip(np.mean(_checked(images) / 255.0, axis=(0, 1, 2)), 0.001, 0.999)
    return np.log(mean / (1.0 - mean))  # (C,)


@_fit_for("gaussian")
def _gaussian_bias(likelihood, images):
    values = (_checked(images) + 0.5) / 256.0
    mean = np.mean(values, axis=(0, 1, 2))
    if likelihood.obs_var is not None:
        return mean  # (C,)
    log_var = np.log(np.var(values, axis=(0, 1, 2)) + 1.0 / (12.0 * 256.0**2))
    return np.stack([mean, log_var], axis=1).ravel()  # (C, 2): mean, log-variance


def _coupled_bias(k, fit, *, neighbours=False, cross_channel=False):
    """Logits (K), then means, log-scales and coupling coefficients (3, K) each, then (local)
    the neighbour coefficients (4, 3, K), then (cross-channel local) the cross coefficients (4, 3,
    K): ``CoupledLogisticMixture._split``'s layout, then the local mixtures'."""
    if fit.offsets.shape != (3,):
        raise ValueError(f"images: the coupled likelihoods model RGB images, got {fit.offsets.shape[0]} channels")
    red_green_blue = lambda values: np.repeat(np.asarray(values)[:, None], k, axis=1)
    coupling = _coefficient_logits([fit.previous[1, 0], fit.previous[2, 0], fit.previous[2, 1]])  # alpha, beta, gamma
    parts = [
        np.zeros(k),
        red_green_blue(fit.offsets).ravel(),
        _component_log_scales(fit.log_scales, k).ravel(),
        red_green_blue(coupling).ravel(),
    ]
    if neighbours:
        parts.append(np.repeat(_coefficient_logits(fit.neighbours)[:, :, None], k, axis=2).ravel())
    if cross_channel:
        parts.append(np.repeat(_coefficient_logits(fit.cross)[:, :, None], k, axis=2).ravel())
    return np.concatenate(parts)


# The last layer's kernel shrunk by this at the start, so that the decoder starts at the fit
# rather than at noise of the fit's own size around it (photos preset, 300 steps on one core:
# training loss 3.23 bits/dim with the kernel shrunk, 3.69 without).
OUTPUT_KERNEL_SCALE = 0.1


def output_layer_path(params):
    """Where the decoder's last layer is: ``decoder/out`` (mlp, conv, hvae) or ``decoder/x/out``
    (the stochastic MLP's p(x|z_1))."""
    decoder = params.get("decoder", {}) if isinstance(params, dict) else {}
    if "out" in decoder:
        return ("decoder", "out")
    if isinstance(decoder.get("x"), dict) and "out" in decoder["x"]:
        return ("decoder", "x", "out")
    raise ValueError("output_bias: 'fit' needs a decoder whose last layer is params['decoder']['out'] or ['decoder']['x']['out']")


def _replaced(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _replaced(tree[path[0]], path[1:], value)}


def with_output_bias(params, bias):
    """``params`` with the decoder's last layer (``output_layer_path``) at ``bias`` for every
    output position (the bias tiled over the layer's positions: the 2x2 pixels of a patch, or
    every pixel of a dense decoder) and its kernel times ``OUTPUT_KERNEL_SCALE``."""
    path = output_layer_path(params)
    out = params
    for name in path:
        out = out[name]
    bias = np.asarray(bias, np.float64)
    repeats, remainder = divmod(out["bias"].shape[-1], bias.size)
    if remainder or repeats == 0:
        raise ValueError(f"bias: {bias.size} numbers a pixel do not tile the decoder's {out['bias'].shape[-1]} outputs")
    fitted = {**out, "bias": np.tile(bias, repeats).astype(out["bias"].dtype), "kernel": out["kernel"] * OUTPUT_KERNEL_SCALE}
    return _replaced(params, path, fitted)
