"""The classical restorers a user already has, as the baselines every VAE restoration is scored
against, and the noise-level estimate a denoiser needs when no sigma is given.

Images are ``(H, W, C)`` floats in [0, 1] (noisy ones may leave it); ``sigma`` is the noise
standard deviation in the same units. Masks are boolean, True where a pixel is known, ``(H, W)``
or ``(H, W, C)``; every fill returns the known pixels exactly as given.

- ``gaussian_blur``: a Gaussian filter, edge-padded.
- ``total_variation``: Chambolle's (2004) TV denoiser (``skimage.restoration.denoise_tv_chambolle``).
- ``non_local_means``: Buades, Coll & Morel (2005) (``skimage.restoration.denoise_nl_means``),
  with the settings scikit-image's gallery uses for it: fast mode, 5x5 patches, a search
  distance of 6, ``h = 0.8 sigma``.
- ``bm3d``: Dabov et al. (2007), the ``bm3d`` package (an optional extra,
  ``pip install vae-jax[restoration-baselines]``); ``bm3d_available()`` says whether it is there.
- ``mean_fill`` and ``biharmonic_fill``: unknown pixels from the known ones' mean, or the
  biharmonic interpolant (Damelin & Hoang 2018, ``skimage.restoration.inpaint_biharmonic``).
- ``estimate_noise_sigma``: Donoho & Johnstone's (1994) wavelet estimate, sigma = median(|d|) /
  0.6745 over the finest diagonal Daubechies-2 wavelet coefficients d (the estimator behind
  ``skimage.restoration.estimate_sigma``, computed here so that it needs no PyWavelets), averaged
  over channels.
"""

from __future__ import annotations

import importlib.util
import math

import jax.numpy as jnp
import numpy as np

NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_PER_SIGMA = 0.8


def gaussian_blur(image, sigma=1.0):
    """The image convolved with a Gaussian of ``sigma`` pixels, edge-padded so borders are not darkened."""
    import dm_pix

    radius = max(1, math.ceil(3.0 * sigma))
    padded = jnp.pad(jnp.asarray(image, jnp.float32), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    return dm_pix.gaussian_blur(padded, sigma, 2 * radius + 1, padding="VALID")


def total_variation(noisy, sigma):
    """argmin_x ||x - y||^2 / 2 + w TV(x) with the weight w = sigma (the TV weight grows with the noise)."""
    from skimage.restoration import denoise_tv_chambolle

    return np.asarray(denoise_tv_chambolle(np.asarray(noisy, np.float64), weight=float(sigma), channel_axis=-1),
                      np.float32)  # fmt: skip


def non_local_means(noisy, sigma):
    """Each pixel the average of pixels whose 5x5 patches look like its own, weighted by
    exp(-max(d^2 - 2 sigma^2, 0) / h^2), d the patch distance, h = 0.8 sigma."""
    from skimage.restoration import denoise_nl_means

    result = denoise_nl_means(
        np.asarray(noisy, np.float64), patch_size=NLM_PATCH_SIZE, patch_distance=NLM_PATCH_DISTANCE,
        h=NLM_H_PER_SIGMA * float(sigma), sigma=float(sigma), fast_mode=True, channel_axis=-1,
    )  # fmt: skip
    return np.asarray(result, np.float32)


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package is installed."""
    return importlib.util.find_spec("bm3d") is not None


# BM3D's blocks are 8 to 12 pixels a side (more at high noise): smaller images are mirrored up to this.
BM3D_MIN_SIDE = 32


def bm3d(noisy, sigma):
    """BM3D of white Gaussian noise of ``sigma``: colour images in its opponent colour space. An
    image under ``BM3D_MIN_SIDE`` pixels a side is mirrored up to it and cropped back."""
    if not bm3d_available():
        raise ImportError("bm3d: the optional package is not installed (pip install vae-jax[restoration-baselines])")
    import bm3d as bm3d_package

    noisy = np.asarray(noisy, np.float64)
    height, width = noisy.shape[:2]
    padded = np.pad(noisy, ((0, max(0, BM3D_MIN_SIDE - height)), (0, max(0, BM3D_MIN_SIDE - width)), (0, 0)),
                    mode="symmetric")  # fmt: skip
    if padded.shape[-1] == 3:
        result = bm3d_package.bm3d_rgb(padded, float(sigma))
    else:
        result = np.stack([bm3d_package.bm3d(padded[..., c], float(sigma)) for c in range(padded.shape[-1])], -1)
    return np.asarray(result, np.float32).reshape(padded.shape)[:height, :width]


# Daubechies' (1988) 4-tap low-pass filter; its quadrature mirror g_k = (-1)^k h_{3-k} is orthonormal,
# so white noise of sigma gives detail coefficients of exactly sigma.
_SQRT3 = math.sqrt(3.0)
DB2_LOW_PASS = np.array([1 + _SQRT3, 3 + _SQRT3, 3 - _SQRT3, 1 - _SQRT3]) / (4 * math.sqrt(2.0))
DB2_HIGH_PASS = DB2_LOW_PASS[::-1] * np.array([1.0, -1.0, 1.0, -1.0])
MAD_TO_SIGMA = 0.6745  # the median of |N(0, 1)|


def diagonal_wavelet_details(channel):
    """The finest diagonal (high-high) Daubechies-2 coefficients of a 2-D array: the high-pass filter
    along rows and columns, every second output kept, no border extension (so no border artefacts)."""
    channel = np.asarray(channel, np.float64)
    g = DB2_HIGH_PASS
    rows = sum(g[k] * channel[:, k : channel.shape[1] - 3 + k] for k in range(4))[:, ::2]
    return sum(g[k] * rows[k : rows.shape[0] - 3 + k] for k in range(4))[::2]


def estimate_noise_sigma(noisy) -> float:
    """Donoho & Johnstone's robust wavelet estimate of white Gaussian noise's sigma: median(|d|) /
    0.6745 over the finest-scale diagonal wavelet coefficients d, averaged over channels."""
    noisy = np.asarray(noisy, np.float64)
    if noisy.ndim != 3 or min(noisy.shape[:2]) < 4:
        raise ValueError(
            f"estimate_noise_sigma: the noise level of an image needs an (H, W, C) array at least 4x4, "
            f"got {noisy.shape}; give sigma instead"
        )
    sigmas = [np.median(np.abs(diagonal_wavelet_details(noisy[..., c]))) / MAD_TO_SIGMA for c in range(noisy.shape[-1])]
    return float(np.mean(sigmas))


def broadcast_mask(mask, image_shape):
    """A boolean mask ``(H, W)`` or ``(H, W, C)`` broadcast to ``image_shape`` (H, W, C)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask: expected a boolean array (True = known pixel), got dtype {mask.dtype}")
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.ndim != 3 or mask.shape[:2] != tuple(image_shape[:2]) or mask.shape[2] not in (1, image_shape[2]):
        raise ValueError(
            f"mask: expected shape (H, W) or (H, W, C) matching {tuple(image_shape)}, got {mask.shape}"
        )
    return jnp.broadcast_to(mask, image_shape)


def mean_fill(image, mask):
    """Unknown pixels take the mean of the known ones, per channel (0.5 where none is known)."""
    image = jnp.asarray(image, jnp.float32)
    mask = broadcast_mask(mask, image.shape)
    known = jnp.sum(mask, axis=(0, 1))
    means = jnp.sum(jnp.where(mask, image, 0.0), axis=(0, 1)) / jnp.maximum(known, 1)
    return jnp.where(mask, image, jnp.where(known > 0, means, 0.5))


def biharmonic_fill(image, mask):
    """Unknown pixels from the biharmonic equation Delta^2 x = 0, the known ones its boundary values.

    Per channel where the mask differs between channels; known pixels exact."""
    from skimage.restoration import inpaint_biharmonic

    image = np.asarray(image, np.float32)
    mask = np.asarray(broadcast_mask(mask, image.shape))
    filled = np.empty_like(image)
    same = bool(np.all(mask == mask[..., :1]))
    if same:
        filled[:] = inpaint_biharmonic(image.astype(np.float64), ~mask[..., 0], channel_axis=-1)
    else:
        for c in range(image.shape[-1]):
            filled[..., c] = inpaint_biharmonic(image[..., c].astype(np.float64), ~mask[..., c])
    return np.where(mask, image, filled).astype(np.float32)
