"""Whole images of any size through a model of fixed size: split into tiles, stitch back.

An ``(H, W, C)`` image is padded at its bottom and right edges up to multiples of the tile
size ``(th, tw)`` and cut into ``rows * cols`` non-overlapping tiles in raster order (row by
row, left to right), stacked as one batch ``(rows * cols, th, tw, C)``. ``stitch`` puts the
tiles back and crops the padding, so ``stitch(split(x)) == x`` exactly for every size.

Padding repeats the edge pixels (``"edge"``) or mirrors the image (``"reflect"``, which needs
the image to be larger than the padding): both keep padded regions looking like the image,
so a model sees plausible content there. Tiles do not overlap, so a model's errors may show
seams at tile borders.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

PAD_MODES = ("edge", "reflect")


class TileGrid(NamedTuple):
    """Where tiles came from: ``rows x cols`` tiles of ``tile_hw`` covering ``image_hw``."""

    rows: int
    cols: int
    tile_hw: tuple[int, int]
    image_hw: tuple[int, int]


def tile_grid(image_hw, tile_hw) -> TileGrid:
    """The grid of ``ceil(H / th) x ceil(W / tw)`` tiles that covers an ``(H, W)`` image."""
    (height, width), (th, tw) = tuple(image_hw), tuple(tile_hw)
    if min(height, width, th, tw) < 1:
        raise ValueError(f"image_hw {image_hw} and tile_hw {tile_hw}: expected positive sizes")
    return TileGrid(-(-height // th), -(-width // tw), (th, tw), (height, width))


def _check_image(name, image):
    if np.ndim(image) != 3:
        raise ValueError(f"{name}: expected one (H, W, C) image, got shape {np.shape(image)}")


def pad_to_tiles(image, tile_hw, mode="edge"):
    """Pad the bottom and right of an ``(H, W, C)`` image up to multiples of ``tile_hw``."""
    _check_image("image", image)
    if mode not in PAD_MODES:
        raise ValueError(f"mode: expected one of {PAD_MODES}, got {mode!r}")
    grid = tile_grid(np.shape(image)[:2], tile_hw)
    pad_h = grid.rows * grid.tile_hw[0] - grid.image_hw[0]
    pad_w = grid.cols * grid.tile_hw[1] - grid.image_hw[1]
    xp = jnp if not isinstance(image, np.ndarray) else np
    return xp.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode), grid


def split(image, tile_hw, mode="edge"):
    """(tiles, grid): the padded image cut into a batch ``(rows * cols, th, tw, C)``, raster order.

    NumPy in, NumPy out; JAX in, JAX out.
    """
    padded, grid = pad_to_tiles(image, tile_hw, mode)
    (th, tw), channels = grid.tile_hw, padded.shape[-1]
    # (rows*th, cols*tw, C) -> (rows, th, cols, tw, C) -> (rows, cols, th, tw, C).
    tiles = padded.reshape(grid.rows, th, grid.cols, tw, channels).transpose(0, 2, 1, 3, 4)
    return tiles.reshape(grid.rows * grid.cols, th, tw, channels), grid


def stitch(tiles, grid: TileGrid):
    """Inverse of ``split``: tiles ``(rows * cols, th, tw, C)`` back to the ``(H, W, C)`` image."""
    (th, tw), (height, width) = grid.tile_hw, grid.image_hw
    expected = (grid.rows * grid.cols, th, tw)
    if tuple(np.shape(tiles)[:3]) != expected or np.ndim(tiles) != 4:
        raise ValueError(f"tiles: expected shape {expected + ('C',)} for {grid}, got {np.shape(tiles)}")
    channels = tiles.shape[-1]
    padded = tiles.reshape(grid.rows, grid.cols, th, tw, channels).transpose(0, 2, 1, 3, 4)
    return padded.reshape(grid.rows * th, grid.cols * tw, channels)[:height, :width]


def map_tiles(fn, image, tile_hw, mode="edge"):
    """Apply ``fn`` (a batch of tiles -> a batch of tiles of the same size) to a whole image."""
    tiles, grid = split(image, tile_hw, mode)
    return stitch(fn(tiles), grid)
