"""Images at the edge: [0, 1] floats <-> uint8, grids of images, PNG files (Pillow)."""

from __future__ import annotations

import os

import numpy as np


def to_uint8(images01):
    """[0, 1] floats -> uint8 by ``round(255 x)`` (clipped); exact inverse of ``x / 255``."""
    return np.clip(np.round(np.asarray(images01, np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_unit(images_uint8):
    """uint8 -> float32 ``x / 255`` (the same values as ``vae_jax.data.transforms.to_unit_interval``)."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 pixels, got dtype {images.dtype}")
    return (np.arange(256, dtype=np.float32) / np.float32(255))[images]


def grid(images, cols=None, pad=1, pad_value=255):
    """Tile a batch ``(N, H, W, C)`` of uint8 images into one ``(rows, cols)`` grid image.

    ``cols`` defaults to ``ceil(sqrt(N))``; empty cells and ``pad``-pixel gutters get ``pad_value``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    n, height, width, channels = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    out = np.full(
        (rows * height + (rows + 1) * pad, cols * width + (cols + 1) * pad, channels), pad_value, np.uint8
    )
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        out[top : top + height, left : left + width] = image
    return out


def save_png(path, image_uint8):
    """Write an ``(H, W, C)`` (C = 1 or 3) or ``(H, W)`` uint8 image as PNG; return ``path``."""
    from PIL import Image

    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"image_uint8: expected dtype uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_grid(path, images01, cols=None, pad=1):
    """Write a batch of [0, 1] images as one PNG grid; return ``path``."""
    return save_png(path, grid(to_uint8(images01), cols=cols, pad=pad))


def to_model_input(images01, input_kind):
    """[0, 1] floats -> what a likelihood of ``input_kind`` reads (a JAX function, jit-safe).

    ``"discrete"``: ``round(255 x)`` as int32; ``"unit"``: ``x`` clipped to [0, 1];
    ``"binary"``: ``x >= 1/2`` as float32 {0, 1}.
    """
    import jax.numpy as jnp

    x = jnp.clip(jnp.asarray(images01, jnp.float32), 0.0, 1.0)
    if input_kind == "discrete":
        return jnp.round(255.0 * x).astype(jnp.int32)
    if input_kind == "unit":
        return x
    if input_kind == "binary":
        return (x >= 0.5).astype(jnp.float32)
    raise ValueError(f"input_kind: expected 'discrete', 'unit' or 'binary', got {input_kind!r}")


def from_model_values(values, input_kind):
    """Values in a likelihood's input kind (e.g. samples) -> [0, 1] float32."""
    import jax.numpy as jnp

    values = jnp.asarray(values, jnp.float32)
    return values / 255.0 if input_kind == "discrete" else jnp.clip(values, 0.0, 1.0)


def uint8_to_model_input(images_uint8, input_kind):
    """uint8 pixels -> a likelihood's input kind, exactly (discrete pixels stay the integers)."""
    return to_model_input(to_unit(images_uint8), input_kind)
