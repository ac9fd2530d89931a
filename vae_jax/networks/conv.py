"""Convolutional ResNet encoder and decoder for natural images (32x32x3 and up).

Stage ``i`` works at resolution ``H / 2**i`` with ``widths[i]`` channels and
``blocks_per_stage`` residual blocks; stages are joined by a stride-2 convolution (encoder)
or a nearest-neighbour upsampling followed by a convolution (decoder, which avoids the
checkerboard artefacts of transposed convolutions). The latent is spatial:
``(H / 2**(len(widths)-1), W / 2**(len(widths)-1), latent_channels)``.

``patch_size`` p > 1 starts the encoder with a space-to-depth rearrangement (each p x p patch
of pixels becomes one position of p*p*C channels) and ends the decoder with its inverse (each
position gives the likelihood's parameters of its p x p pixels), so stage 0 works at H / p.
The networks then never convolve at full resolution, where few channels make convolutions
run far below the machine's matmul rate (on a 2-core CPU, 3x3 convolutions of 32 channels at
32x32 ran forward and backward at a third of the rate of 128-256 channels at 8x8-16x16); every
resolution ``H / 2**i`` becomes ``H / (p 2**i)``.
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


def space_to_depth(x, patch_size):
    """(B, H, W, C) -> (B, H/p, W/p, p*p*C): pixel (p*i + a, p*j + b) goes to position (i, j),
    channels ``(a*p + b)*C : (a*p + b + 1)*C``."""
    if patch_size == 1:
        return x
    batch, height, width, channels = x.shape
    p = patch_size
    x = x.reshape(batch, height // p, p, width // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height // p, width // p, p * p * channels)


def depth_to_space(x, patch_size):
    """The inverse of ``space_to_depth``: (B, h, w, p*p*C) -> (B, p*h, p*w, C)."""
    if patch_size == 1:
        return x
    batch, height, width, depth = x.shape
    p = patch_size
    x = x.reshape(batch, height, width, p, p, depth // (p * p)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height * p, width * p, depth // (p * p))


class BottomUp(nn.Module):
    """x -> one feature map per stage (finest first): space-to-depth by ``patch_size``, stem,
    then per stage a stride-2 convolution (from stage 1 on) and ``blocks_per_stage`` residual blocks."""

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    activation: str = "silu"
    dtype: Any = jnp.float32
    patch_size: int = 1

    @nn.compact
    def __call__(self, x):
        x = space_to_depth(x.astype(self.dtype), self.patch_size)
        h = nn.Conv(self.widths[0], (3, 3), dtype=self.dtype, name="stem")(x)
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
    patch_size: int = 1

    @nn.compact
    def __call__(self, x):
        body = BottomUp(self.widths, self.blocks_per_stage, self.activation, self.dtype, self.patch_size, name="body")
        h = body(x)[-1]
        return gaussian_head(activation(self.activation)(h), self.latent_channels, conv=True, dtype=self.dtype)


class ConvDecoder(nn.Module):
    """A stem on z, then per stage (coarsest first) nearest upsampling with a convolution and
    residual blocks, then an ``output_kernel`` x ``output_kernel`` convolution to the likelihood's
    parameters ``output_shape`` (its ``params_shape``: (H, W, ...) per example)."""

    output_shape: tuple[int, ...] = (32, 32, 3, 2)
    widths: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 2
    activation: str = "silu"
    dtype: Any = jnp.float32
    patch_size: int = 1
    output_kernel: int = 3

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
        return params_out(act(h), self.output_shape, self.dtype, self.patch_size, self.output_kernel)


def params_out(h, output_shape, dtype, patch_size=1, kernel=3):
    """The last convolution (``kernel`` square), to the likelihood's parameters of every pixel
    ``as_pixel_params``. With many parameters a pixel (a local mixture's 34 K) this layer can cost
    as much as the rest of the decoder; a 1x1 kernel costs a ninth of a 3x3 one."""
    out = nn.Conv(math.prod(output_shape[2:]) * patch_size**2, (kernel, kernel), dtype=dtype, name="out")(h)
    return as_pixel_params(out, output_shape, dtype, patch_size)


def as_pixel_params(out, output_shape, dtype, patch_size=1):
    """(B, h, w, p*p*M) from the last convolution -> ``(B, p*h, p*w, *output_shape[2:])`` in float32
    (or wider), M = prod(output_shape[2:]) numbers per pixel, whatever the image's size."""
    out = depth_to_space(out, patch_size)
    return out.reshape(*out.shape[:3], *output_shape[2:]).astype(accumulation_dtype(dtype))
