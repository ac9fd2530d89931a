"""Fully connected encoder and decoder (Kingma & Welling 2014's 784-400-20 and kin; the stochastic
layers of Burda et al. 2015 are the same two networks between latent layers)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, activation
from vae_jax.networks.heads import gaussian_head

# Kernel initialisers by name, so a network's configuration stays plain, hashable data.
KERNEL_INITS = {"lecun_normal": nn.linear.default_kernel_init, "glorot_uniform": nn.initializers.glorot_uniform()}


def dense_stack(h, widths, activation_name, dtype, kernel_init):
    """Flatten, then a Dense layer + activation per width, named ``hidden_{i}``."""
    act = activation(activation_name)
    h = h.reshape(h.shape[0], -1).astype(dtype)
    for i, width in enumerate(widths):
        h = act(nn.Dense(width, dtype=dtype, kernel_init=KERNEL_INITS[kernel_init], name=f"hidden_{i}")(h))
    return h


class MLPEncoder(nn.Module):
    """Hidden Dense layers, then the Gaussian head (``log_var``: its parameterisation)."""

    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    activation: str = "relu"
    dtype: Any = jnp.float32
    kernel_init: str = "lecun_normal"
    log_var: str = "clamped"

    @nn.compact
    def __call__(self, x):
        h = dense_stack(x, self.hidden, self.activation, self.dtype, self.kernel_init)
        return gaussian_head(
            h, self.latent_dim, log_var=self.log_var, kernel_init=KERNEL_INITS[self.kernel_init], dtype=self.dtype
        )


class MLPDecoder(nn.Module):
    """Hidden Dense layers, then one Dense to all of the likelihood's parameters.

    The reshape to ``output_shape`` (the likelihood's ``params_shape``) comes after the last
    layer, so every parameter of every pixel is its own output unit.
    """

    output_shape: tuple[int, ...] = (28, 28, 1, 1)
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    dtype: Any = jnp.float32
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, z):
        h = dense_stack(z, self.hidden, self.activation, self.dtype, self.kernel_init)
        out = nn.Dense(math.prod(self.output_shape), dtype=self.dtype, kernel_init=KERNEL_INITS[self.kernel_init],
                       name="out")(h)  # fmt: skip
        return out.reshape(z.shape[0], *self.output_shape).astype(accumulation_dtype(self.dtype))
