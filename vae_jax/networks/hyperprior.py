"""The four transforms of the scale-hyperprior codec (Balle et al. 2018, fig. 4), in Flax.

- analysis g_a: x (H, W, 3) -> y (H/16, W/16, M): four 5x5 convolutions of stride 2, GDN between.
- synthesis g_s: y^ -> x^: four 5x5 transposed convolutions of stride 2, inverse GDN between.
- hyper-analysis h_a: y -> z (H/64, W/64, N): 3x3 stride 1, then two 5x5 of stride 2, ReLU between;
  it reads |y| for the scale hyperprior (the scale does not depend on the sign) and y itself
  for the mean-scale one (Minnen et al. 2018).
- hyper-synthesis h_s: z^ -> (mu, sigma) of y: two 5x5 transposed convolutions of stride 2 and a
  3x3 convolution, ReLU between; sigma = softplus of the last layer (the mean-scale model's
  second M channels are mu; the scale model's mu is 0).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks.gdn import GDN
from vae_jax.networks.subpixel import SubpixelConvTranspose

STRIDE = 16  # x -> y
HYPER_STRIDE = 4  # y -> z


def _upsampling(features: int, index: int, dtype):
    """The i-th 5x5 transposed convolution of stride 2, under flax's own name for it
    (``ConvTranspose_i``), so the parameters of models trained with ``nn.ConvTranspose`` load."""
    return SubpixelConvTranspose(features, 5, 2, dtype=dtype, name=f"ConvTranspose_{index}")


class Analysis(nn.Module):
    width: int
    latent_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = GDN(dtype=self.dtype)(nn.Conv(self.width, (5, 5), strides=2, dtype=self.dtype)(x))
        return nn.Conv(self.latent_channels, (5, 5), strides=2, dtype=self.dtype)(x)


class Synthesis(nn.Module):
    width: int
    out_channels: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y):
        for i in range(3):
            y = GDN(inverse=True, dtype=self.dtype)(_upsampling(self.width, i, self.dtype)(y))
        return _upsampling(self.out_channels, 3, self.dtype)(y)


class HyperAnalysis(nn.Module):
    width: int
    signed: bool = False  # the mean-scale model reads y, the scale model |y|
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y):
        h = y if self.signed else jnp.abs(y)
        h = jax.nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype)(h))
        h = jax.nn.relu(nn.Conv(self.width, (5, 5), strides=2, dtype=self.dtype)(h))
        return nn.Conv(self.width, (5, 5), strides=2, dtype=self.dtype)(h)


class HyperSynthesis(nn.Module):
    width: int
    latent_channels: int
    with_mean: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        h = jax.nn.relu(_upsampling(self.width, 0, self.dtype)(z))
        h = jax.nn.relu(_upsampling(self.width, 1, self.dtype)(h))
        out = nn.Conv(self.latent_channels * (2 if self.with_mean else 1), (3, 3), dtype=self.dtype)(h)
        out = out.astype(jnp.float32)
        if self.with_mean:
            mean, raw_scale = jnp.split(out, 2, axis=-1)
        else:
            mean, raw_scale = jnp.zeros_like(out), out
        return mean, jax.nn.softplus(raw_scale)
