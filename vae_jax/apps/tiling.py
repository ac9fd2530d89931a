"""Whole images of any size through a model of fixed size: split into tiles, stitch back.

An ``(H, W, C)`` image is padded at its bottom and right edges up to multiples of the tile
size ``(th, tw)`` and cut into ``rows * cols`` non-overlapping tiles in raster order (row by
row, left to right), stacked as one batch ``(rows * cols, th, tw, C)``. ``stitch`` puts the
tiles back and crops the padding, so ``stitch(split(x)) == x`` exactly for every size.

Padding repeats the edge pixels (``"edge"``) or mirrors the image (``"reflect"``, which needs
the image to be larger than the padding): both keep padded regions looking like the image,
so a model sees plausible content there. Tiles of one grid do not overlap, so a model's errors
may show seams at tile borders.

Overlapping grids (``OverlappingGrids``) remove the seams: grid g cuts the image mirrored by a
shift ``(sy_g, sx_g)`` at its top and left, so its tile borders fall elsewhere; every image pixel
lies inside exactly one tile of each grid (``inside`` marks which tile pixels are image pixels,
not mirror padding), so a sum over grids weighted 1/G counts each pixel once (``coverage``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
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


# ---------------------------------------------------------------- overlapping grids


class OverlappingGrids(NamedTuple):
    """G tile grids over one ``(H, W)`` image, grid g shifted down and right by ``shifts[g]``.

    Hashable: a static argument of ``jax.jit``."""

    image_hw: tuple[int, int]
    tile_hw: tuple[int, int]
    shifts: tuple[tuple[int, int], ...]


def overlapping_grids(image_hw, tile_hw, num_grids: int = 2) -> OverlappingGrids:
    """1 grid (no shift), 2 (the second shifted by half a tile both ways) or 4 (no shift, half a
    tile down, right, and both)."""
    (th, tw) = tuple(int(v) for v in tile_hw)
    tile_grid(image_hw, (th, tw))  # checks the sizes
    half = (th // 2, tw // 2)
    choices = {1: ((0, 0),), 2: ((0, 0), half), 4: ((0, 0), (half[0], 0), (0, half[1]), half)}
    if num_grids not in choices:
        raise ValueError(f"num_grids: expected 1, 2 or 4 overlapping grids, got {num_grids!r}")
    return OverlappingGrids(tuple(int(v) for v in image_hw), (th, tw), choices[num_grids])


def _padding(grids: OverlappingGrids, shift):
    """((top, bottom), (left, right)): the shift at the top and left, up to whole tiles below and right."""
    pads = []
    for size, tile, before in zip(grids.image_hw, grids.tile_hw, shift, strict=True):
        total = -(-(size + before) // tile) * tile
        pads.append((before, total - size - before))
    return tuple(pads)


def grid_tiles(grids: OverlappingGrids, image):
    """Every grid's tiles of ``image`` (H, W, C), grid after grid, each mirrored by its shift and
    cut in raster order: ``(sum_g rows_g * cols_g, th, tw, C)``. Linear in ``image`` (JAX)."""
    (th, tw), channels = grids.tile_hw, image.shape[-1]
    batches = []
    for shift in grids.shifts:
        padded = jnp.pad(image, (*_padding(grids, shift), (0, 0)), mode="reflect")
        rows, cols = padded.shape[0] // th, padded.shape[1] // tw
        tiles = padded.reshape(rows, th, cols, tw, channels).transpose(0, 2, 1, 3, 4)
        batches.append(tiles.reshape(rows * cols, th, tw, channels))
    return jnp.concatenate(batches)


def inside(grids: OverlappingGrids) -> np.ndarray:
    """Boolean ``(N, th, tw)``: which pixels of ``grid_tiles``'s tiles are image pixels (not padding)."""
    height, width = grids.image_hw
    marks = []
    for shift in grids.shifts:
        (top, bottom), (left, right) = _padding(grids, shift)
        mark = np.pad(np.ones((height, width), bool), ((top, bottom), (left, right)))
        marks.append(np.asarray(split(mark[..., None], grids.tile_hw)[0][..., 0]))
    return np.concatenate(marks)


def coverage(grids: OverlappingGrids) -> jax.Array:
    """How many tile pixels inside the image each image pixel is, ``(H, W)``: the adjoint of
    ``grid_tiles`` applied to ``inside``. Equal to G everywhere (each grid counts a pixel once)."""
    image = jnp.zeros((*grids.image_hw, 1), jnp.float32)
    _, adjoint = jax.vjp(lambda x: grid_tiles(grids, x), image)
    (counts,) = adjoint(jnp.asarray(inside(grids), jnp.float32)[..., None])
    return counts[..., 0]
