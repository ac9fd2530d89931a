"""A strided transposed convolution computed as one stride-1 convolution and a depth-to-space shuffle.

The transposed convolution of stride s (``flax.linen.ConvTranspose`` with 'SAME' padding) is the
correlation of the zero-dilated input with the kernel w (k taps a side), padded by a = the
'SAME' lead of ``jax.lax.conv_transpose``:

    out[s m + p] = sum_t w[t] x[m + d]    over the taps t with t = s d + a - p  (phase p in 0..s-1)

so each output phase p is a stride-1 correlation of x with the taps w[s d + a - p]. Stacking the
s^2 phases' kernels along the output channels, ordered (p, q, c), gives one stride-1 convolution of
s^2 C_out channels, and interleaving its phases (``conv.depth_to_space``) gives the transposed
convolution exactly.

Why: XLA's CPU backend runs the gradient of a convolution with a dilated input about 20x slower
than that of this form (``python -m benchmarks.transposed_conv``: the codec's synthesis transform
at batch 4 of 256x256, 5.48 s against 0.28 s on a 2-core Intel Xeon), which held the lossy codec's
train step at 5-7 s. Same parameters as ``flax.linen.ConvTranspose``
(``kernel`` of shape (k, k, C_in, C_out), ``bias``), so checkpoints of either load in the other.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.networks.conv import depth_to_space


def same_lead_padding(kernel_size: int, stride: int) -> int:
    """The zeros ``jax.lax.conv_transpose(..., 'SAME')`` puts before the dilated input."""
    return kernel_size - 1 if stride > kernel_size - 1 else math.ceil((kernel_size + stride - 2) / 2)


def phase_offsets(kernel_size: int, stride: int) -> range:
    """The input offsets d (out[s m + p] reads x[m + d]) that some phase's tap reaches."""
    lead = same_lead_padding(kernel_size, stride)
    reached = [
        (p + t - lead) // stride
        for p in range(stride)
        for t in range(kernel_size)
        if (p + t - lead) % stride == 0
    ]
    return range(min(reached), max(reached) + 1)


def phase_kernel(kernel, stride: int):
    """(k, k, C_in, C_out) -> (n, n, C_in, s^2 C_out): tap (i, j) of phase (p, q) at window
    position (d_i, d_j) is w[s d_i + a - p, s d_j + a - q] (zero where no tap lands)."""
    size = kernel.shape[0]
    lead, offsets = same_lead_padding(size, stride), phase_offsets(size, stride)
    # gather[p, n] = the tap of phase p at window position n, or size (a zero row appended below).
    gather = np.full((stride, len(offsets)), size)
    for p in range(stride):
        for n, d in enumerate(offsets):
            if 0 <= (t := stride * d + lead - p) < size:
                gather[p, n] = t
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    taps = padded[gather[:, :, None, None], gather[None, None, :, :]]  # (s, n, s, n, C_in, C_out)
    cin, cout = kernel.shape[2:]
    return taps.transpose(1, 3, 4, 0, 2, 5).reshape(len(offsets), len(offsets), cin, stride * stride * cout)


def subpixel_conv_transpose(x, kernel, stride: int):
    """``jax.lax.conv_transpose(x, kernel, (s, s), 'SAME')`` for NHWC ``x`` and an HWIO square kernel."""
    offsets = phase_offsets(kernel.shape[0], stride)
    phases = jax.lax.conv_general_dilated(
        x,
        phase_kernel(kernel, stride),
        window_strides=(1, 1),
        padding=[(-offsets.start, offsets.stop - 1)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return depth_to_space(phases, stride)


class SubpixelConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose(features, (k, k), strides=(s, s))`` ('SAME' padding, bias), computed
    by ``subpixel_conv_transpose``; same parameter names, shapes and initialisers."""

    features: int
    kernel_size: int = 5
    stride: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        return subpixel_conv_transpose(x, kernel, self.stride) + bias
