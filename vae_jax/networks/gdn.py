"""Generalized divisive normalization (Balle, Laparra & Simoncelli 2016), the nonlinearity of the
learned lossy codec's transforms.

GDN:          y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
inverse GDN:  y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)

at every spatial position, over channels. beta > 0 and gamma >= 0 are kept so by their
parameterization: beta = b^2 + BETA_MIN and gamma = g^2 elementwise, started at beta = 1 and
gamma = 0.1 I (Balle et al. 2018's initialisation), which makes GDN start near x / sqrt(1 + 0.1 x^2).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

BETA_MIN = 1e-6
GAMMA_INIT = 0.1


def normalization_pool(x, beta, gamma):
    """beta_i + sum_j gamma_ij x_j^2 over the last axis of ``x``."""
    return beta + jnp.einsum("...j,ij->...i", jnp.square(x), gamma)


class GDN(nn.Module):
    """GDN over the last axis; ``inverse=True`` is inverse GDN (the synthesis transform's)."""

    inverse: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        beta_root = self.param("beta_root", nn.initializers.ones, (channels,))
        gamma_root = self.param(
            "gamma_root", lambda key, shape: jnp.sqrt(GAMMA_INIT) * jnp.eye(shape[0]), (channels, channels)
        )
        beta = jnp.square(beta_root) + BETA_MIN
        gamma = jnp.square(gamma_root)
        pool = normalization_pool(x.astype(jnp.float32), beta, gamma)
        scale = jnp.sqrt(pool) if self.inverse else jnp.reciprocal(jnp.sqrt(pool))
        return (x * scale).astype(self.dtype)
