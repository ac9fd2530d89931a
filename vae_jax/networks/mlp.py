"""Fully connected encoder and decoder (Kingma & Welling 2014's 784-400-20 and kin)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, activation, soft_clamp


class MLPEncoder(nn.Module):
    """Flatten, hidden Dense layers, then two linear heads: mean and log-variance."""

    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        h = x.reshape(x.shape[0], -1).astype(self.dtype)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(h))
        mean = nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h)
        log_var = nn.Dense(self.latent_dim, dtype=self.dtype, name="log_var")(h)
        return mean.astype(accumulation_dtype(self.dtype)), soft_clamp(
            log_var.astype(accumulation_dtype(self.dtype))
        )


class MLPDecoder(nn.Module):
    """Hidden Dense layers, then one Dense to every sub-pixel's likelihood parameters.

    The reshape to ``output_shape + (params_per_subpixel,)`` comes after the last layer, so
    every parameter of every pixel is its own output unit.
    """

    output_shape: tuple[int, ...] = (28, 28, 1)
    params_per_subpixel: int = 1
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        act = activation(self.activation)
        h = z.reshape(z.shape[0], -1).astype(self.dtype)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(h))
        size = math.prod(self.output_shape) * self.params_per_subpixel
        out = nn.Dense(size, dtype=self.dtype, name="out")(h)
        return out.reshape(z.shape[0], *self.output_shape, self.params_per_subpixel).astype(
            accumulation_dtype(self.dtype)
        )
