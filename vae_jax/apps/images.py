"""Images at the edge: [0, 1] floats <-> uint8 <-> a likelihood's input kind; PNG grids through
``vae_jax.outputs``."""

from __future__ import annotations

import numpy as np

from vae_jax import outputs


def to_uint8(images01):
    """[0, 1] floats -> uint8 by ``round(255 x)`` (clipped); exact inverse of ``x / 255``."""
    return np.clip(np.round(np.asarray(images01, np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_unit(images_uint8):
    """uint8 -> float32 ``x / 255`` (the same values as ``vae_jax.data.transforms.to_unit_interval``)."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 pixels, got dtype {images.dtype}")
    return (np.arange(256, dtype=np.float32) / np.float32(255))[images]


def save_grid(path, images01, cols=None, pad=1):
    """Write a batch of [0, 1] images as one PNG grid; return ``path``."""
    outputs.save_png(path, outputs.image_grid(to_uint8(images01), columns=cols, padding=pad))
    return path


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
