"""Full-reference image quality of a decoded image against its original, both uint8 0..255, in
NumPy (float64): PSNR, SSIM and multi-scale SSIM, the scores lossy codecs are compared by.

PSNR over every sub-pixel (all channels pooled): 10 log10(255^2 / MSE), inf for equal images.

SSIM (Wang, Bovik, Sheikh & Simoncelli 2004), on one channel, with local statistics from an 11x11
Gaussian window w of sigma 1.5 (mu_x = w * x, sigma_x^2 = w * x^2 - mu_x^2, sigma_xy = w * (xy) -
mu_x mu_y, population moments), kept where the window lies inside the image ("valid"):

    l(x, y) = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    cs(x, y) = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
    SSIM = mean over positions of l * cs,   C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, L = 255

(the same numbers as scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)``).

MS-SSIM (Wang, Simoncelli & Bovik 2003): the image is halved M = 5 times over (2x2 average pooling;
an odd last row or column is dropped), and

    MS-SSIM = SSIM_M^{w_M} * prod_{j=1}^{M-1} mean(cs_j)^{w_j},
    w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

the contrast-structure term at every scale, the luminance term only at the coarsest. The 11x11
window must fit the coarsest scale: a side of at least 11 * 2^4 = 176 pixels. Colour images: the
mean over the R, G and B channels of each channel's score (as for SSIM). A negative mean cs or SSIM
(anticorrelated images) is clipped to 0 before its fractional power, so the score stays real.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
K1, K2 = 0.01, 0.03
C1, C2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
WINDOW = 11
SIGMA = 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MIN_MS_SSIM_SIDE = WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176


def _pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    """The two images as float64 ``(H, W, C)``, checked: uint8, the same shape, (H, W) or (H, W, C)."""
    reference, test = np.asarray(reference), np.asarray(test)
    for name, image in (("reference", reference), ("test", test)):
        if image.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 pixels 0..255, got dtype {image.dtype}")
        if image.ndim not in (2, 3) or 0 in image.shape:
            raise ValueError(f"{name}: expected a non-empty (H, W) or (H, W, C) image, got shape {image.shape}")
    if reference.shape != test.shape:
        raise ValueError(f"reference and test: expected the same shape, got {reference.shape} and {test.shape}")
    if reference.ndim == 2:
        reference, test = reference[..., None], test[..., None]
    return reference.astype(np.float64), test.astype(np.float64)


def psnr(reference_uint8, test_uint8) -> float:
    """10 log10(255^2 / MSE), the MSE over every sub-pixel; inf when the images are equal."""
    reference, test = _pair(reference_uint8, test_uint8)
    mse = float(np.mean((reference - test) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The 1-D taps g_k proportional to exp(-k^2 / (2 sigma^2)), k = -(size-1)/2..(size-1)/2, summing
    to 1; the 2-D window is their outer product (a Gaussian is separable)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _filter_valid(plane: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The 2-D correlation of ``plane`` with outer(taps, taps) where the window fits inside it: one
    pass per axis, one shifted slice per tap (no (H, W, 11) temporary for large photographs)."""
    size = taps.size
    height, width = plane.shape[0] - size + 1, plane.shape[1] - size + 1
    rows = sum(tap * plane[k : k + height] for k, tap in enumerate(taps))
    return sum(tap * rows[:, k : k + width] for k, tap in enumerate(taps))


def _ssim_and_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean of l * cs, mean of cs) of two float 2-D planes (the module docstring's terms)."""
    taps = gaussian_window()
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x**2
    var_y = _filter_valid(y * y, taps) - mu_y**2
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    cs = (2 * cov + C2) / (var_x + var_y + C2)
    luminance = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)
    return float(np.mean(luminance * cs)), float(np.mean(cs))


def _check_side(shape, minimum: int, what: str) -> None:
    if min(shape[:2]) < minimum:
        raise ValueError(f"{what}: images need a side of at least {minimum} pixels, got {shape[1]}x{shape[0]}")


def ssim(reference_uint8, test_uint8) -> float:
    """Single-scale SSIM (Wang et al. 2004) with the 11x11, sigma 1.5 Gaussian window, the mean
    over channels; images at least 11 pixels on a side."""
    reference, test = _pair(reference_uint8, test_uint8)
    _check_side(reference.shape, WINDOW, "ssim")
    return float(np.mean([_ssim_and_cs(reference[..., c], test[..., c])[0] for c in range(reference.shape[-1])]))


def _halve(plane: np.ndarray) -> np.ndarray:
    """2x2 average pooling (an odd last row or column dropped)."""
    height, width = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    plane = plane[:height, :width]
    return 0.25 * (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2])


def _ms_ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM_M^{w_M} prod_j mean(cs_j)^{w_j} of one channel (module docstring)."""
    score = 1.0
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        full, cs = _ssim_and_cs(x, y)
        last = scale == len(MS_SSIM_WEIGHTS) - 1
        score *= max(full if last else cs, 0.0) ** weight
        if not last:
            x, y = _halve(x), _halve(y)
    return score


def ms_ssim(reference_uint8, test_uint8) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003): 5 scales, weights ``MS_SSIM_WEIGHTS``, the
    mean over channels; images at least ``MIN_MS_SSIM_SIDE`` (176) pixels on a side."""
    reference, test = _pair(reference_uint8, test_uint8)
    _check_side(reference.shape, MIN_MS_SSIM_SIDE, f"ms_ssim ({len(MS_SSIM_WEIGHTS)} scales of an {WINDOW}x{WINDOW} window)")
    return float(np.mean([_ms_ssim_plane(reference[..., c], test[..., c]) for c in range(reference.shape[-1])]))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, -10 log10(1 - MS-SSIM) (as Balle et al. 2018 plot it): the scale
    a rate curve is fitted on for a BD-rate, where 0.99 -> 20 dB and 0.999 -> 30 dB; inf at 1."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
