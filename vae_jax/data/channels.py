"""Colour <-> grayscale for uint8 images, so every source honours the same ``channels`` option."""

from __future__ import annotations

import numpy as np

VALID_CHANNELS = (None, 1, 3)

# ITU-R 601-2 luma in 16-bit fixed point, the weights and rounding Pillow's ``convert("L")``
# uses, so a folder read through Pillow and an array converted here agree bit for bit.
_LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)  # sum = 2**16


def check_channels(channels) -> None:
    """Raise unless ``channels`` is None (keep the source's own), 1 or 3."""
    if channels not in VALID_CHANNELS:
        raise ValueError(f"channels: expected one of {VALID_CHANNELS}, got {channels!r}")


def luma(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(..., 1)`` uint8 gray, rounded like Pillow."""
    weighted = rgb.astype(np.uint32) @ _LUMA_WEIGHTS
    return ((weighted + 2**15) >> 16).astype(np.uint8)[..., None]


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert ``(..., C)`` uint8 images with C in {1, 3} to ``channels`` (None: unchanged).

    Gray -> colour repeats the one channel; colour -> gray is ``luma``.
    """
    check_channels(channels)
    have = images.shape[-1]
    if have not in (1, 3):
        raise ValueError(f"images: expected 1 or 3 channels in the last axis, got shape {images.shape}")
    if channels is None or channels == have:
        return images
    if channels == 1:
        return luma(images)
    return np.repeat(images, 3, axis=-1)
