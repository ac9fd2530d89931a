"""Convolutional ResNet encoder and decoder for natural images (32x32x3 and up).

Stage ``i`` works at resolution ``H / 2**i`` with ``widths[i]`` channels and
``blocks_per_stage`` residual blocks; stages are joined by a stride-2 convolution (encoder)
or a nearest-neighbour upsampling followed by a convolution (decoder, which avoids the
checkerboard artefacts of transposed convolutions). The latent is spatial:
``(H / 2**(len(widths)-1), W / 2**(len(widths)-1), latent_channels)``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, activation, soft_clamp


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


class ConvEncoder(nn.Module):
    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 2
    latent_channels: int = 16
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.widths[0], (3, 3), dtype=self.dtype, name="stem")(x.astype(self.dtype))
        for stage, width in enumerate(self.widths):
            if stage > 0:
                h = nn.Conv(width, (4, 4), strides=(2, 2), dtype=self.dtype, name=f"down_{stage}")(h)
            for block in range(self.blocks_per_stage):
                h = ResBlock(width, self.activation, self.dtype, name=f"stage_{stage}_block_{block}")(h)
        h = activation(self.activation)(h)
        mean = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype, name="mean")(h)
        log_var = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype, name="log_var")(h)
        return mean.astype(accumulation_dtype(self.dtype)), soft_clamp(
            log_var.astype(accumulation_dtype(self.dtype))
        )


class ConvDecoder(nn.Module):
    output_shape: tuple[int, int, int] = (32, 32, 3)
    params_per_subpixel: int = 2
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
        channels = self.output_shape[-1]
        out = nn.Conv(channels * self.params_per_subpixel, (3, 3), dtype=self.dtype, name="out")(act(h))
        batch, height, wide, _ = out.shape
        return out.reshape(batch, height, wide, channels, self.params_per_subpixel).astype(
            accumulation_dtype(self.dtype)
        )
