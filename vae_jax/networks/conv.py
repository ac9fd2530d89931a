"""Convolutional ResNet encoder and decoder for natural images (32x32x3 and up).

Stage ``i`` works at resolution ``H / 2**i`` with ``widths[i]`` channels and
``blocks_per_stage`` residual blocks; stages are joined by a stride-2 convolution (encoder)
or a nearest-neighbour upsampling followed by a convolution (decoder, which avoids the
checkerboard artefacts of transposed convolutions). The latent is spatial:
``(H / 2**(len(widths)-1), W / 2**(len(widths)-1), latent_channels)``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, activation
from vae_jax.networks.heads import gaussian_head


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))), the second convolution zero-initialised.

    Starting each block as the identity keeps activations' scale independent of depth at
    initialisation, which deep VAEs need to train stably (Child 2021, sec. 3.3).
    """

    width: int
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        h = nn.Conv(self.width, (3, 3), dtype=self.dtype)(act(x))
        h = nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(act(h))
        return x + h


class BottomUp(nn.Module):
    """x -> one feature map per stage (finest first): stem, then per stage a stride-2
    convolution (from stage 1 on) and ``blocks_per_stage`` residual blocks."""

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.widths[0], (3, 3), dtype=self.dtype, name="stem")(x.astype(self.dtype))
        features = []
        for stage, width in enumerate(self.widths):
            if stage > 0:
                h = nn.Conv(width, (4, 4), strides=(2, 2), dtype=self.dtype, name=f"down_{stage}")(h)
            for block in range(self.blocks_per_stage):
                h = ResBlock(width, self.activation, self.dtype, name=f"stage_{stage}_block_{block}")(h)
            features.append(h)
        return tuple(features)


class ConvEncoder(nn.Module):
    """The bottom-up ResNet, then the Gaussian head (1x1 convolutions) on its coarsest features:
    a spatial latent of ``latent_channels`` channels."""

    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 2
    latent_channels: int = 16
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = BottomUp(self.widths, self.blocks_per_stage, self.activation, self.dtype, name="body")(x)[-1]
        return gaussian_head(activation(self.activation)(h), self.latent_channels, conv=True, dtype=self.dtype)


class ConvDecoder(nn.Module):
    """A stem on z, then per stage (coarsest first) nearest upsampling with a convolution and
    residual blocks, then a convolution to the likelihood's parameters ``output_shape`` (its
    ``params_shape``: (H, W, ...) per example)."""

    output_shape: tuple[int, ...] = (32, 32, 3, 2)
    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 2
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        act = activation(self.activation)
        h = nn.Conv(self.widths[-1], (3, 3), dtype=self.dtype, name="stem")(z.astype(self.dtype))
        for stage in reversed(range(len(self.widths))):
            width = self.widths[stage]
            if stage < len(self.widths) - 1:
                batch, height, wide, channels = h.shape
                h = jax.image.resize(h, (batch, 2 * height, 2 * wide, channels), "nearest")
                h = nn.Conv(width, (3, 3), dtype=self.dtype, name=f"up_{stage}")(h)
            for block in range(self.blocks_per_stage):
                h = ResBlock(width, self.activation, self.dtype, name=f"stage_{stage}_block_{block}")(h)
        return params_out(act(h), self.output_shape, self.dtype)


def params_out(h, output_shape, dtype):
    """The last 3x3 convolution, to prod(output_shape[2:]) channels, reshaped to
    ``(B, *output_shape)`` in float32 (or wider)."""
    out = nn.Conv(math.prod(output_shape[2:]), (3, 3), dtype=dtype, name="out")(h)
    return out.reshape(out.shape[0], *output_shape).astype(accumulation_dtype(dtype))
