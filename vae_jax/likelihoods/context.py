"""What a pixel's distribution reads besides z: its context.

A likelihood is p(x | z) = prod_ij p(x_ij | z, context of (i, j)), each pixel x_ij one event of C
sub-pixels. The context of sub-pixel x_ijc is what ``Context`` declares: the pixel's own earlier
channels x_ij,<c, and the values of causal neighbours, pixels at offsets (dy, dx) that come before
(i, j). Everything that must know what a pixel reads works from the declaration alone:

- masked scoring (``Context.scorable_pixels``): a pixel can be scored only where it and
  everything it reads are known;
- a coder's order (``Context.coding_order``): a sub-pixel is decoded only after everything it
  reads. With no neighbours every pixel can be decoded at once, channel by channel; with
  neighbours, one wavefront 2i + j at a time (``wavefront``), since every neighbour must lie on an
  earlier one.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

# The causal neighbours the local likelihoods read, as (row, column) offsets: left, up, up-left and
# up-right (the half 3x3 context of JPEG-LS and CALIC). Each lies on an earlier wavefront 2i + j,
# so all pixels of one wavefront can be decoded or sampled at once: 2 H + W - 2 steps for an
# H x W image.
CAUSAL_NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))

# The earlier channel each cross-channel term reads and the channel it moves, in the cross-channel
# likelihood's coefficient order: G reads R, B reads R, B reads G.
CROSS_CHANNEL_PAIRS = ((0, 1), (0, 2), (1, 2))


@dataclasses.dataclass(frozen=True)
class Context:
    """What sub-pixel x_ijc reads besides z.

    ``earlier_channels``: the pixel's own channels before c. ``neighbours``: the (dy, dx) offsets of
    the pixels whose channel c it reads (outside the image: not read); each on an earlier
    wavefront, 2 dy + dx < 0. ``earlier_channel_neighbours``: (source, target) channel pairs,
    source < target: channel target also reads channel source at every neighbour. A sub-pixel
    that reads its earlier channels reads what they read too (in a mixture they share the
    component, whose weights they update), so a pixel as a whole reads every channel of its
    neighbours.
    """

    earlier_channels: bool = False
    neighbours: tuple[tuple[int, int], ...] = ()
    earlier_channel_neighbours: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if not all(2 * dy + dx < 0 for dy, dx in self.neighbours):
            raise ValueError(
                f"neighbours: expected offsets (dy, dx) on earlier wavefronts (2 dy + dx < 0), got {self.neighbours}"
            )
        pairs = self.earlier_channel_neighbours
        if pairs and not self.neighbours:
            raise ValueError("earlier_channel_neighbours: reading other channels' neighbours needs neighbours")
        if not all(0 <= source < target for source, target in pairs):
            raise ValueError(f"earlier_channel_neighbours: expected (source, target) with source < target, got {pairs}")

    def scorable_pixels(self, known):
        """Which pixels can be scored from partly known data: every channel known, and every
        neighbour read (inside the image) wholly known. known (..., H, W, C) bool -> (..., H, W)."""
        pixels = jnp.all(known, axis=-1)
        if not self.neighbours:
            return pixels
        around = neighbour_values(pixels[..., None], self.neighbours, True)[..., 0, :]
        return pixels & jnp.all(around, axis=-1)

    def coding_order(self, valid_hw, channels, chunk, tiles=1):
        """The order a decoder reads the sub-pixels of ``tiles`` (h, w) tiles in, stacked one
        under the other (raster pixel indices of the (tiles h, w) stack), as steps (pixel indices,
        channel), each step reading only what the steps before it decoded. Without neighbours,
        channel-major (all R, then all G, ...) in chunks of ``chunk`` pixels (the symbols' order
        does not depend on the chunks); with neighbours, wavefront 2i + j by wavefront of every
        tile at once (each tile's own wavefront, tile by tile within a step), each channel in turn
        (only the wavefronts present: a tile one pixel wide has no odd ones)."""
        valid_h, valid_w = valid_hw
        pixels = valid_h * valid_w
        if self.neighbours:
            front = (2 * np.arange(valid_h)[:, None] + np.arange(valid_w)[None, :]).ravel()
            order = np.argsort(front, kind="stable")
            _, starts = np.unique(front[order], return_index=True)
            offsets = pixels * np.arange(tiles)[:, None]
            fronts = [(offsets + f[None]).ravel() for f in np.split(order, starts[1:])]
            return [(pixels_of_front, c) for pixels_of_front in fronts for c in range(channels)]
        pixels *= tiles
        chunks = [np.arange(start, min(start + chunk, pixels)) for start in range(0, pixels, chunk)]
        return [(indices, c) for c in range(channels) for indices in chunks]


def neighbour_values(x, offsets, fill):
    """x (..., H, W, C) at each pixel's neighbours (dy, dx) in ``offsets``, ``fill`` outside the
    image: (..., H, W, C, len(offsets))."""
    height, width = x.shape[-3:-1]
    top, left = max(0, -min(dy for dy, _ in offsets)), max(0, -min(dx for _, dx in offsets))
    bottom, right = max(0, max(dy for dy, _ in offsets)), max(0, max(dx for _, dx in offsets))
    pad = [(0, 0)] * (x.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    padded = jnp.pad(x, pad, constant_values=fill)
    shifted = [padded[..., top + dy : top + dy + height, left + dx : left + dx + width, :] for dy, dx in offsets]
    return jnp.stack(shifted, axis=-1)


def causal_neighbour_centres(x):
    """The bin centres 2x/255 - 1 of each pixel's causal neighbours (``CAUSAL_NEIGHBOURS``), 0 (the
    centre of the range) outside the image: x (..., H, W, C) -> (..., H, W, C, 4)."""
    return neighbour_values(2.0 * jnp.asarray(x, jnp.float32) / 255.0 - 1.0, CAUSAL_NEIGHBOURS, 0.0)


def wavefront(height, width):
    """2i + j for every pixel (H, W): the step at which a causal decoder reaches it (every causal
    neighbour has a smaller one)."""
    return 2 * jnp.arange(height)[:, None] + jnp.arange(width)[None, :]
