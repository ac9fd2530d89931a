"""Lossless compression of 8-bit images of any size with bits-back ANS (BB-ANS).

Bits-back coding (Townsend, Bird & Barber 2019) turns a latent variable model into a lossless
code whose expected length approaches the negative ELBO; with a hierarchy every latent group
is coded with bits back in turn (HiLLoC, Townsend et al. 2020; Bit-Swap, Kingma et al. 2019).
``vae_jax.apps.bitsback`` codes one tile (its docstring has the scheme, the discretization and
what makes encoder and decoder probabilities agree); this module cuts images into tiles, chains
them on one ANS stack and defines the file. ``run_compression`` (``vae-jax compress``) codes,
verifies by decoding and measures the file; ``compression_report`` (``--report``,
``benchmarks.compression``) also compares it with the model's -ELBO and with the standard codecs
(``vae_jax.codecs``).

Tiles. A model whose networks are fully convolutional (``bitsback.fully_convolutional``: the
ladder ``HierarchicalVAE`` and the convolutional VAE, with the standard normal prior) codes an
image in tiles of ``tile_size`` square (default: the size it was trained on), each border tile
only edge-padded up to a multiple of ``bitsback.tile_unit`` (the ladder's total downsampling):
the padding is not coded, only the few latents over it, so a tile costs what the model says of
its pixels and a small image is one tile. Tiles bound the memory: the networks never see more
than one tile, the 256-value tables a chunk of pixels. Other models (MLPs) code tiles of their
``data_shape``. Images of any channel count are coded in planes of the model's channels
(``split_planes``), so greyscale, alpha and 16-bit grey come back exactly in their mode.

Waves. Once the stack can fund them, blocks of one tile shape are coded in waves
(``bitsback.TileCoder.push_waves``: many tiles in lockstep as one unit of the scheme, the
networks batched), each as large as the stack funds (``_wave_size``: the bits on the stack over
the most a tile of the shape has popped so far, with a margin), so the waves grow with the stack,
about geometrically, and the sequential steps number about log(blocks) waves, not the blocks.
The blocks are coded grouped by tile shape (``_units``: the whole blocks, then each border's),
so that a wave holds one shape. Several images are coded together (``compress_images``): each
on its own stack with its own waves, the waves of one shape of every image in the same network
calls; a file is the same whether its image was coded alone or with others.

Starting the chain. Tiles are coded on one stack, each taking its bits back from the tiles
before it; a tile's pops need about the entropy of its latents' posteriors in bins on the stack,
sum_g H(Q(z_g | x, z_<g)) ~ (latent dims) x (log2(sigma_q / w) + 2.05) bits, more than it adds
net (a ladder has more latent dims than pixels, most of them near their prior after training,
and those pop about as many bits as they push back). The stack starts empty, so an image is
coded as a quadtree: each block of ``tile_size`` (raster order) is one tile if the stack can
fund its pops, else its quadrants (raster order, those holding image pixels), each again one
tile or four, down to the model's tile unit. The encoder decides greedily by
trying the pops (a tile whose pops would run the stack low is split, not coded); a tile of one
unit that still cannot be funded is coded without bits back (its latents at the bins of the
posterior means given the binned groups above, nothing popped). So the image's first tile is
one unit, and starting the chain costs that tile's latents' posterior entropy (the report's
``chain_start_bits``), not a whole first block's. Tiles then grow as the stack fills: a tile of
side s once about (pops / net) x s^2 pixels are coded. The first block's smaller tiles cost more
per pixel (the networks see less context): ``neg_elbo_bits_per_dim`` is the -ELBO of the tiles
actually coded, ``grid_neg_elbo_bits_per_dim`` that of plain ``tile_size`` tiles; starting with a
larger tile without bits back would trade that difference for about sum_g H(Q(z_g | .)) bits
of that tile, far worse for a ladder. No pseudo-random initial bits, and a file codes nothing
it does not use. Rejected: HiLLoC's start, the first pixels coded by another codec whose bytes
then serve as bits to pop (a unit tile's worth of another codec's bytes funds only part of its
pops, and the decoder would need that codec), and a larger first tile without bits back.
The rates these choices give: ``docs/results/compression.md``.

File format (little-endian): ``_HEADER`` = magic ``b"VAEBBANS"``, version (u8), model hash (32
bytes, ``model_hash``), image height, width (u32), its channels n (u16), its mode (4 ASCII
bytes), block height, width (u16: the tile size), bin_log2 (i8), max_abs (u16), number of ANS
words (u32); then the layout bits (``numpy.packbits`` little-endian, zero-padded to a byte), the
ANS words, the image's checksum (``image_checksum``: 8 bytes of SHA-256 of the header and the
pixels) and a CRC-32 of everything before it. The CRC refuses a damaged file before any
decoding; the checksum, verified after decoding, refuses what a CRC cannot see: a file edited
or written by another program with a valid CRC, or one decoded where the networks round
differently (``bitsback``), which would otherwise decode to another image. Its 8 bytes (64 bits
a file: 0.02 bits/dim on a 32 x 32 RGB image, 1.6e-4 on 300 x 451) leave a wrong image one
chance in 2**64 to pass, where a CRC-32's 2**-32 is not negligible over a dataset decoded on
the wrong platform; more bytes would buy nothing more, a checksum anyone can recompute not
being a signature. The layout bits walk planes x blocks in coding order, each block's quadtree
in preorder (``_Node``): a node that can be split (its halves are multiples of the tile unit
and at least two quadrants hold pixels; a node whose pixels lie in one quadrant is that
quadrant) has a bit, 1 = split; a leaf that cannot be split has a bit, 1 =
bits back (a leaf that could have been split always has bits back). A model tied to its training
size (tiles of its ``data_shape``, never split) has exactly one bit per tile. Version 9; earlier
versions (v8: every network call on 16 tiles, each pixel value under a 256-value table, the
coefficients' tanh in NumPy; v7: tile by tile, the networks at batch 1; v6: no checksum of the
image; v5: the posterior's bins in one leaky Gaussian over the whole range, see ``bitsback``;
v4: one tile size, the first tile without bits back; v1-3: 32x32 tiles, pseudo-random initial
bits) are refused by name. A file this module did not write for
the model raises ``CompressionError`` (but for the checksum's 2**-64), never returns another image.
"""

from __future__ import annotations

import collections
import hashlib
import math
import struct
import time
import zlib
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoints, codecs
from vae_jax.apps import bitsback

MAGIC = b"VAEBBANS"
# 9: a wave's last tiles in a network call of 1, 4 or 16 tiles, waves of any size, pixel values in two
# steps (cell of 8, value in it), the coefficients' tanh in the networks' program;
# 8: tiles in waves, networks in calls of bitsback.CALL_TILES; 7: a checksum of the image; 6: posterior pops in a window of cells around the mean (no far tail pops);
# 5: quadtree tiles from one unit up; 4: every latent group, large tiles, no initial bits; 3: any channel
# count; 2: padding not coded
VERSION = 9
_HEADER = struct.Struct("<8sB32sIIH4sHHbHI")
_FIELDS = (
    "magic", "version", "model_hash", "height", "width", "channels", "mode", "tile_height", "tile_width",
    "bin_log2", "max_abs", "num_words",
)  # fmt: skip
CHECKSUM_BYTES = 8  # the image's checksum: why 8, in the module docstring
_CRC = struct.Struct("<I")
_TRAILER_BYTES = CHECKSUM_BYTES + _CRC.size
# Latent bins of 1/16. With latents whose posteriors are about as wide as the prior (free bits
# keep them so), finer bins cost more over the -ELBO on the shipped models' photographs (not on
# every image, nor monotonically: the rates per bin size are in docs/results/compression.md).
DEFAULT_BIN_LOG2 = 4
DEFAULT_MAX_ABS = 16  # latents coded on [-16, 16]; beyond it they are clipped to the edge bins


class CompressionError(ValueError):
    """A file that cannot be decoded: truncated, corrupted, of another version, or made by another model."""


def image_checksum(header: bytes, pixels: np.ndarray) -> bytes:
    """The file's checksum of its image: the first ``CHECKSUM_BYTES`` of SHA-256 of the header
    bytes and the uint8 ``(H, W, n)`` pixels (C order), so it also vouches for the shape and mode."""
    return hashlib.sha256(header + np.ascontiguousarray(pixels, np.uint8).tobytes()).digest()[:CHECKSUM_BYTES]


def layout_size(fields, file_size) -> int:
    """The tile layout's bytes in a file of ``file_size`` bytes with header ``fields``: what the
    header, the ANS words and the trailer leave (negative if the file is shorter than they are)."""
    return file_size - _HEADER.size - 4 * fields["num_words"] - _TRAILER_BYTES


check_codable = bitsback.check_codable


# ---------------------------------------------------------------- model identity


def model_hash(model, params) -> bytes:
    """SHA-256 of the model description's ``repr`` and every params leaf (path, dtype, shape, bytes).

    Two models share a hash only if they have the same description and bit-identical params.
    """
    digest = hashlib.sha256(repr(model).encode())
    return checkpoints.digest_tree(digest, params).digest()


# ---------------------------------------------------------------- tiles


class Tile(NamedTuple):
    """One tile: its top-left pixel, the image rows and columns it holds, its padded size."""

    top: int
    left: int
    valid_hw: tuple[int, int]
    padded_hw: tuple[int, int]


def tile_hw_for(model, tile_size=None) -> tuple[int, int]:
    """The tile size ``compress_image`` uses: ``tile_size`` square for a fully convolutional model
    (default its ``data_shape``, the crops it was trained on, rounded up to its tile unit), else
    ``data_shape``. Why the training size: on larger tiles the coarsest groups' maps have interior
    positions no training crop had, and a model may not carry over (the shipped model's top-down
    priors blew up on some tiles larger than its crops: docs/results/compression.md)."""
    if not bitsback.fully_convolutional(model):
        if tile_size is not None and (tile_size, tile_size) != tuple(model.data_shape[:2]):
            raise ValueError(
                f"tile_size: {type(model).__name__} runs only on its training size {model.data_shape[:2]} "
                f"(not fully convolutional, or a learned prior); got {tile_size}"
            )
        return tuple(model.data_shape[:2])
    unit_h, unit_w = bitsback.tile_unit(model)
    if tile_size is None:
        trained_h, trained_w = model.data_shape[:2]
        return -(-trained_h // unit_h) * unit_h, -(-trained_w // unit_w) * unit_w
    if not (isinstance(tile_size, (int, np.integer)) and 0 < tile_size <= 65535):
        raise ValueError(f"tile_size: expected a positive int up to 65535, got {tile_size!r}")
    if tile_size % unit_h or tile_size % unit_w:
        raise ValueError(f"tile_size: expected a multiple of the model's tile unit {(unit_h, unit_w)}, got {tile_size}")
    return int(tile_size), int(tile_size)


def tile_layout(model, image_hw, tile_hw) -> list[Tile]:
    """The tiles of an ``(H, W)`` image in raster order, each padded to a multiple of the tile unit."""
    (height, width), (tile_h, tile_w) = image_hw, tile_hw
    unit_h, unit_w = bitsback.tile_unit(model)
    tiles = []
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            valid = (min(tile_h, height - top), min(tile_w, width - left))
            padded = (-(-valid[0] // unit_h) * unit_h, -(-valid[1] // unit_w) * unit_w)
            tiles.append(Tile(top, left, valid, padded))
    return tiles


def _cut(plane, tile):
    """The tile's pixels of ``plane``, edge-padded to its padded size."""
    (valid_h, valid_w), (padded_h, padded_w) = tile.valid_hw, tile.padded_hw
    crop = plane[tile.top : tile.top + valid_h, tile.left : tile.left + valid_w]
    return np.pad(crop, ((0, padded_h - valid_h), (0, padded_w - valid_w), (0, 0)), mode="edge")


class _Node(NamedTuple):
    """A quadtree node: the square (or ``data_shape``) region of nominal size ``hw`` at
    ``(top, left)``; its tile is that region's image pixels."""

    top: int
    left: int
    hw: tuple[int, int]


def _node_tile(node, image_hw, unit):
    valid = (min(node.hw[0], image_hw[0] - node.top), min(node.hw[1], image_hw[1] - node.left))
    padded = (-(-valid[0] // unit[0]) * unit[0], -(-valid[1] // unit[1]) * unit[1])
    return Tile(node.top, node.left, valid, padded)


def _halves(node, image_hw, unit):
    """The node's quadrants holding image pixels (raster order), or [] if its halves are not
    multiples of the tile unit."""
    (h, w), (unit_h, unit_w) = node.hw, unit
    if h % (2 * unit_h) or w % (2 * unit_w):
        return []
    half = (h // 2, w // 2)
    return [
        _Node(node.top + dy, node.left + dx, half)
        for dy in (0, half[0]) for dx in (0, half[1])
        if node.top + dy < image_hw[0] and node.left + dx < image_hw[1]
    ]  # fmt: skip


def _reduced(node, image_hw, unit):
    """The node, or its one quadrant holding pixels while there is only one (the same tile)."""
    children = _halves(node, image_hw, unit)
    while len(children) == 1:
        node = children[0]
        children = _halves(node, image_hw, unit)
    return node


def _quadrants(node, image_hw, unit):
    """A reduced node's reduced quadrants: two to four, or [] for a node that cannot be split."""
    return [_reduced(child, image_hw, unit) for child in _halves(node, image_hw, unit)]


def _blocks(model, image_hw, tile_hw):
    """The quadtree roots: ``tile_layout``'s blocks, reduced (a small image's block is the
    smallest node holding it)."""
    unit = bitsback.tile_unit(model)
    return [
        _reduced(_Node(tile.top, tile.left, tuple(tile_hw)), image_hw, unit)
        for tile in tile_layout(model, image_hw, tile_hw)
    ]


def num_tiles(model, shape, tile_hw=None) -> int:
    """Blocks coded for an image of ``shape`` (H, W, n) in blocks of ``tile_hw`` (default
    ``tile_hw_for(model)``; a file's is in its header): the progress total (``progress(1)`` comes
    after each block's tiles, however many the quadtree made of it). Counted, not listed."""
    (height, width, n), (tile_h, tile_w) = shape, tile_hw or tile_hw_for(model)
    return -(-height // tile_h) * -(-width // tile_w) * -(-n // model.data_shape[-1])


# ---------------------------------------------------------------- planes


def default_mode(num_channels: int) -> str:
    """The image mode a plain ``(H, W, n)`` array stands for: L, LA, RGB or RGBA (else none)."""
    return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(num_channels, "")


def split_planes(pixels: np.ndarray, channels: int) -> list[np.ndarray]:
    """An ``(H, W, n)`` image as model-sized planes ``(H, W, channels)``: its channels in groups of
    ``channels``, the last group completed by repeating its last channel (grey or alpha for a
    colour model: (v, v, v)); ``join_planes`` takes the first n channels back."""
    n = pixels.shape[-1]
    planes = []
    for start in range(0, n, channels):
        group = pixels[..., start : start + channels]
        if group.shape[-1] < channels:
            group = np.concatenate([group, np.repeat(group[..., -1:], channels - group.shape[-1], -1)], -1)
        planes.append(group)
    return planes


def join_planes(planes: list[np.ndarray], num_channels: int) -> np.ndarray:
    return np.concatenate(planes, axis=-1)[..., :num_channels]


# ---------------------------------------------------------------- public API


def _as_pixels(pixels):
    image = np.asarray(pixels)
    if image.dtype != np.uint8:
        raise ValueError(f"pixels: expected dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or min(image.shape) < 1 or image.shape[-1] > 65535:
        raise ValueError(f"pixels: expected an (H, W) or (H, W, n) image, got shape {np.shape(pixels)}")
    return image


def _check_settings(image, mode, bin_log2, max_abs):
    if not (isinstance(mode, str) and mode.isascii() and len(mode) <= 4):
        raise ValueError(f"mode: expected an image mode of at most 4 ASCII characters, got {mode!r}")
    if not (0 <= bin_log2 <= 12 and 1 <= max_abs <= 64):
        raise ValueError(f"bin_log2={bin_log2}, max_abs={max_abs}: expected 0..12 and 1..64")
    if max(image.shape[:2]) >= 2**32:
        raise ValueError(f"pixels: sides up to 2**32 - 1, got {image.shape[:2]}")


class _Coded(NamedTuple):
    """One coded tile, in coding order: its plane, its block (index in planes x blocks), the tile,
    whether it had bits back, and the bits it added to the stack (encoder only; a wave's tiles
    share its bits equally)."""

    plane: int
    block: int
    tile: Tile
    bits_back: bool
    bits: float = 0.0


class _Unit(NamedTuple):
    """A block of one plane, in coding order: the plane, its number in planes x blocks, its node."""

    plane: int
    block: int
    node: _Node


def _units(model, image_hw, tile_hw, num_planes):
    """Every plane's blocks in coding order: grouped by tile shape, the most common shape first
    (the whole blocks, then each border's), each group plane by plane in raster order, so that
    runs of one shape can be coded as waves."""
    blocks, unit = _blocks(model, image_hw, tile_hw), bitsback.tile_unit(model)
    shapes = [_node_tile(block, image_hw, unit)[2:] for block in blocks]
    counts = collections.Counter(shapes)  # in order of first appearance, the ties' order
    rank = {shape: r for r, (shape, _) in enumerate(sorted(counts.items(), key=lambda item: -item[1]))}
    order = sorted((rank[shapes[b]], p, b) for p in range(num_planes) for b in range(len(blocks)))
    return [_Unit(p, p * len(blocks) + b, blocks[b]) for _, p, b in order]


def _encode_node(coder, ans, plane, node, where, layout, coded):
    """Code one quadtree node greedily: one tile if the stack funds its pops (or it cannot be
    split), else its quadrants. Appends its layout bits and coded tiles; returns the stack."""
    p, block, image_hw, unit = where
    tile = _node_tile(node, image_hw, unit)
    children = _quadrants(node, image_hw, unit)
    before = ans.num_valid_bits()
    ans, bits_back = coder.push(ans, _cut(plane, tile), tile.valid_hw, require_bits_back=bool(children))
    if bits_back is None:  # the stack cannot fund this tile's pops yet: its quadrants, smaller
        layout.append(1)
        for child in children:
            ans = _encode_node(coder, ans, plane, child, where, layout, coded)
        return ans
    layout.append(0 if children else int(bits_back))
    coded.append(_Coded(p, block, tile, bits_back, ans.num_valid_bits() - before))
    return ans


# A wave is at most this many tiles: the pixel tables of a wave's tiles are held at once
# (about 1.4 MB a 32 x 32 tile for the shipped model's likelihood).
MAX_WAVE = 128
# A wave is sized to pop at most 1 / this of the stack's bits (its tiles' pops vary).
_WAVE_MARGIN = 1.25


def _wave_size(available_bits, pops_per_tile, run, max_wave):
    """How many tiles of a run of ``run`` blocks of one shape to code as the next wave: as many as
    ``available_bits`` on the stack fund at ``pops_per_tile`` (the most a tile of the shape took
    so far) with a margin; 0 if not even one."""
    tiles = min(run, max_wave, int((available_bits - bitsback.POP_RESERVE_BITS) / (_WAVE_MARGIN * pops_per_tile)))
    return max(tiles, 0)


class _ImageCoding:
    """One image's coding in progress: its planes and units, its stack, what it has written (layout
    bits, coded tiles, the wave list: 0 a unit coded alone as a quadtree, n >= 1 a wave of n
    units) and, per tile shape, the most bits a tile's pops took so far."""

    def __init__(self, planes, units, image_hw, unit, ans):
        self.planes, self.units, self.image_hw, self.unit, self.ans = planes, units, image_hw, unit, ans
        self.next, self.layout, self.coded, self.waves, self.pops = 0, [], [], [], {}
        self.cap, self.alone = None, False  # after a wave failed: the next one's bound; a unit alone

    def tile(self, i):
        return _node_tile(self.units[i].node, self.image_hw, self.unit)

    def proposal(self, max_wave):
        """(tile shape, tiles) of the next wave, or None: code the next unit alone."""
        shape = self.tile(self.next)[2:]
        if shape not in self.pops and self.pops:
            # A tile's pops grow with its latents, about its padded area: a new shape (a border's)
            # starts from the coded ones' most per pixel, so that its first tiles need no program of their own.
            per_pixel = max(pops / (padded[0] * padded[1]) for (_, padded), pops in self.pops.items())
            self.pops[shape] = per_pixel * shape[1][0] * shape[1][1]
        if self.alone or shape not in self.pops:
            return None
        limit = min(max_wave, self.cap or max_wave)
        run = 1
        while self.next + run < len(self.units) and run < limit and self.tile(self.next + run)[2:] == shape:
            run += 1
        tiles = _wave_size(self.ans.num_valid_bits(), self.pops[shape], run, limit)
        return (shape, tiles) if tiles else None  # not one tile: alone, split as the stack allows

    def wave_tiles(self, n):
        return np.stack([_cut(self.planes[u.plane], self.tile(self.next + k)) for k, u in enumerate(self.units[self.next : self.next + n])])

    def accept(self, n, coded):
        """The wave of the next ``n`` units was coded: ``coded`` = (new stack, bits its pops took)."""
        ans, popped = coded
        share = (ans.num_valid_bits() - self.ans.num_valid_bits()) / n
        shape = self.tile(self.next)[2:]
        self.pops[shape] = max(self.pops[shape], popped / n)
        for k in range(n):
            u, tile = self.units[self.next + k], self.tile(self.next + k)
            self.layout.append(0 if _quadrants(u.node, self.image_hw, self.unit) else 1)
            self.coded.append(_Coded(u.plane, u.block, tile, True, share))
        self.ans, self.cap = ans, None
        self.waves.append(n)
        self.next += n

    def refuse(self, n):
        """The wave of ``n`` units could not be funded: the next one is at most half, or a unit alone."""
        self.cap = n // 2 if n <= bitsback.CALL_TILES else n - bitsback.CALL_TILES
        self.alone = self.cap < 1

    def code_alone(self, coder):
        u, tile = self.units[self.next], self.tile(self.next)
        where = (u.plane, u.block, self.image_hw, self.unit)
        self.ans = _encode_node(coder, self.ans, self.planes[u.plane], u.node, where, self.layout, self.coded)
        if self.coded[-1].tile == tile and self.coded[-1].bits_back:  # the block was coded whole, with bits back
            self.pops[tile[2:]] = max(self.pops.get(tile[2:], 0.0), coder.popped_bits)
        self.waves.append(0)
        self.next += 1
        self.cap, self.alone = None, False


def _encode_all(coder, codings, max_wave, progress):
    """Code every image to its end in rounds: each image not done either codes its next unit alone
    (the chain start, or a shape it has not coded yet) or proposes a wave as large as its stack
    funds (``_wave_size``); the waves of one tile shape from every image go through the networks
    together (``TileCoder.push_waves``), each on its own stack."""
    while True:
        active = [c for c in codings if c.next < len(c.units)]
        if not active:
            return
        waves = {}
        for coding in active:
            proposal = coding.proposal(max_wave)
            if proposal is None:
                coding.code_alone(coder)
                if progress is not None:
                    progress(1)
            else:
                waves.setdefault(proposal[0], []).append((coding, proposal[1]))
        for (valid_hw, _), members in waves.items():
            jobs = [(coding.ans, coding.wave_tiles(n)) for coding, n in members]
            for (coding, n), coded in zip(members, coder.push_waves(jobs, valid_hw)):
                if coded is None:
                    coding.refuse(n)
                    continue
                coding.accept(n, coded)
                if progress is not None:
                    progress(n)


def _varints(values) -> bytes:
    """LEB128: each value 7 bits a byte, low first, the high bit set on all but a value's last byte."""
    out = bytearray()
    for value in values:
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


def _read_varints(data, count_limit):
    """The wave list at the start of ``data``: (lengths, bytes read); ``CompressionError`` if cut short
    or longer than ``count_limit`` entries."""
    values, position = [], 0

    def read():
        nonlocal position
        value, shift = 0, 0
        while True:
            if position >= len(data) or shift > 35:
                raise CompressionError("corrupted file: its wave list ends early")
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    count = read()
    if count > count_limit:
        raise CompressionError(f"corrupted file: {count} waves for {count_limit} blocks")
    values = [read() for _ in range(count)]
    return values, position


def _encode_many(model, params, images, modes, tile_size, bin_log2, max_abs, chunk_pixels, progress, max_wave=MAX_WAVE):
    """Per image, (file bytes, the coded tiles: ``_Coded`` in coding order)."""
    import constriction

    if not (isinstance(max_wave, (int, np.integer)) and max_wave >= 1):
        raise ValueError(f"max_wave: expected a positive int, got {max_wave!r}")
    tile_hw, unit = tile_hw_for(model, tile_size), bitsback.tile_unit(model)
    coder = bitsback.TileCoder(model, params, bin_log2, max_abs, chunk_pixels)
    codings = []
    for image in images:
        planes = split_planes(image, model.data_shape[-1])
        units = _units(model, image.shape[:2], tile_hw, len(planes))
        codings.append(_ImageCoding(planes, units, image.shape[:2], unit, constriction.stream.stack.AnsCoder()))
    _encode_all(coder, codings, int(max_wave), progress)
    digest, files = model_hash(model, params), []
    for image, mode, coding in zip(images, modes, codings):
        words = coding.ans.get_compressed().astype("<u4")
        height, width, channels = image.shape
        header = _HEADER.pack(
            MAGIC, VERSION, digest, height, width, channels, mode.encode("ascii"), *tile_hw, bin_log2, max_abs,
            words.size,
        )  # fmt: skip
        layout = np.packbits(np.array(coding.layout, bool), bitorder="little").tobytes()
        body = header + _varints([len(coding.waves), *coding.waves]) + layout + words.tobytes()
        body += image_checksum(header, image)
        files.append((body + _CRC.pack(zlib.crc32(body)), coding.coded))
    return files


def _encode(model, params, image, mode, tile_size, bin_log2, max_abs, chunk_pixels, progress, max_wave=MAX_WAVE):
    """(file bytes, the coded tiles) of one image."""
    return _encode_many(model, params, [image], [mode], tile_size, bin_log2, max_abs, chunk_pixels, progress, max_wave)[0]


def _decode_layout(bits, units, image_hw, unit):
    """Each unit's coded tiles (``_Coded``, coding order) that the layout bits describe, and how
    many bits they took."""
    position = 0

    def take():
        nonlocal position
        if position >= bits.size:
            raise CompressionError("corrupted file: its tile layout ends early")
        position += 1
        return bool(bits[position - 1])

    def visit(p, block, node, leaves):
        tile = _node_tile(node, image_hw, unit)
        children = _quadrants(node, image_hw, unit)
        if not children:
            leaves.append(_Coded(p, block, tile, take()))
        elif take():
            for child in children:
                visit(p, block, child, leaves)
        else:
            leaves.append(_Coded(p, block, tile, True))
        return leaves

    return [visit(u.plane, u.block, u.node, []) for u in units], position


def compress_image(model, params, pixels, *, mode=None, tile_size=None, bin_log2=DEFAULT_BIN_LOG2,
                   max_abs=DEFAULT_MAX_ABS, chunk_pixels=None, progress=None, max_wave=MAX_WAVE) -> bytes:  # fmt: skip
    """bytes: a uint8 image ``(H, W)`` or ``(H, W, n)`` (any size, any n) coded losslessly with
    bits-back ANS over every latent group.

    The channels are coded in planes of the model's channels (``split_planes``: RGBA on a
    colour model is RGB, then (A, A, A)); each plane in blocks (``tile_layout``, ``tile_size``
    for a fully convolutional model), raster order, each block one tile or a quadtree of smaller
    ones while the stack cannot fund its pops (the module docstring). ``mode`` (stored, default
    ``default_mode(n)``) names how to write the pixels back; ``chunk_pixels`` bounds the
    likelihood tables' memory (the bytes do not depend on it); ``progress(k)`` is called after
    every k blocks coded together. Blocks of one shape are coded in waves of up to ``max_wave``
    tiles in lockstep once the stack funds their pops (``bitsback.TileCoder``); the file records
    the waves, so any decoder reads it whatever ``max_wave`` made it.
    """
    (blob,) = compress_images(
        model, params, [pixels], modes=[mode], tile_size=tile_size, bin_log2=bin_log2, max_abs=max_abs,
        chunk_pixels=chunk_pixels, progress=progress, max_wave=max_wave,
    )  # fmt: skip
    return blob


def _check_fields(fields, file_size):
    """Refuse header fields ``compress_image`` never writes, in a file of ``file_size`` bytes: so
    that what is computed from them (``num_tiles``, the tiles' list) is bounded by the file."""
    sizes = ("height", "width", "channels", "tile_height", "tile_width")
    if min(fields[name] for name in sizes) < 1:
        raise CompressionError(f"corrupted file: empty image or tiles in the header {fields}")
    if not (0 <= fields["bin_log2"] <= 12 and 1 <= fields["max_abs"] <= 64):
        raise CompressionError(f"corrupted file: bin_log2={fields['bin_log2']}, max_abs={fields['max_abs']}")
    layout_bytes = layout_size(fields, file_size)
    if layout_bytes < 0:
        raise CompressionError(f"corrupted file: too short for the {fields['num_words']} ANS words of its header")
    blocks = -(-fields["height"] // fields["tile_height"]) * -(-fields["width"] // fields["tile_width"])
    if blocks > 8 * layout_bytes:  # every block has at least one layout bit
        raise CompressionError(f"corrupted file: {layout_bytes} layout bytes cannot lay out its header's image")


def read_header(blob):
    """The header's fields as a dict, after checking magic, version, length, CRC and that its
    fields are ones ``compress_image`` writes (``CompressionError`` if not)."""
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + 1 or blob[: len(MAGIC)] != MAGIC:
        raise CompressionError(f"not a vae-jax bits-back file: it starts {blob[:8]!r}, expected {MAGIC!r}")
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise CompressionError(
            f"unsupported file version {version}: this reader reads version {VERSION} only (version 8 ran "
            f"every network call on 16 tiles and coded pixel values under 256-value tables; version 7 coded "
            f"tile by tile, its networks at batch 1; version 6 had no "
            f"checksum of the image; version 5 popped "
            f"the latents under one leaky Gaussian over the whole latent range; version 4 coded one tile size, "
            f"its first tile without bits back; versions 1-3 32x32 tiles with pseudo-random initial bits); "
            f"compress the image again"
        )
    if len(blob) < _HEADER.size + _TRAILER_BYTES:
        raise CompressionError(
            f"truncated file: {len(blob)} bytes, shorter than the header and trailer "
            f"({_HEADER.size + _TRAILER_BYTES} bytes)"
        )
    fields = dict(zip(_FIELDS, _HEADER.unpack_from(blob)))
    (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(blob[: -_CRC.size]) != crc:
        raise CompressionError("corrupted or truncated file: CRC-32 mismatch")
    _check_fields(fields, len(blob))
    fields["mode"] = fields["mode"].rstrip(b"\0").decode("ascii", errors="replace")
    return fields


def _check_fits_model(model, fields, layout_bytes):
    """Refuse a (checked) header this module never writes for ``model``, before anything the size
    of its image is built."""
    tile_hw = (fields["tile_height"], fields["tile_width"])
    if not bitsback.fully_convolutional(model):
        if tile_hw != tuple(model.data_shape[:2]):
            raise CompressionError(f"file tiles {tile_hw} do not fit the model's size {model.data_shape}")
    elif tile_hw[0] % bitsback.tile_unit(model)[0] or tile_hw[1] % bitsback.tile_unit(model)[1]:
        raise CompressionError(f"corrupted file: tiles {tile_hw} are not multiples of the model's unit")
    if num_tiles(model, (fields["height"], fields["width"], fields["channels"]), tile_hw) > 8 * layout_bytes:
        raise CompressionError(f"corrupted file: {layout_bytes} layout bytes cannot lay out its header's image")


def _is_coder_error(error) -> bool:
    """Whether decoding bytes no encoder wrote can raise ``error``: any ``Exception`` (constriction
    raises KeyError for a symbol it cannot code, ValueError, ...) or a Rust panic (constriction's
    ``PanicException``, a ``BaseException``); not an interrupt, running out of memory or a
    ``CompressionError`` already saying what is wrong."""
    if isinstance(error, (CompressionError, MemoryError)):
        return False
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def _decode_tiles(coder, words, leaves, waves, planes, progress):
    """Pop the coded tiles off the ANS ``words`` into ``planes``, last wave first; ``leaves`` the
    units' tiles, ``waves`` how many units each wave holds."""
    import constriction

    def place(tile, plane, decoded):
        (valid_h, valid_w) = tile.valid_hw
        planes[plane, tile.top : tile.top + valid_h, tile.left : tile.left + valid_w] = decoded[:valid_h, :valid_w]

    ans = constriction.stream.stack.AnsCoder(words)
    end = len(leaves)
    for n in reversed(waves):
        members = leaves[end - max(n, 1) : end]
        end -= max(n, 1)
        if n == 0:  # a unit coded alone: its quadtree's tiles one by one
            for p, _, tile, bits_back, _ in reversed(members[0]):
                place(tile, p, coder.pop(ans, tile.padded_hw, tile.valid_hw, bits_back)[0])
        else:
            tile = members[0][0].tile
            decoded = coder.pop(ans, tile.padded_hw, tile.valid_hw, True, tiles=n)
            for (leaf,), pixels in zip(members, decoded):
                place(leaf.tile, leaf.plane, pixels)
        if progress is not None:
            progress(max(n, 1))
    if not ans.is_empty():
        raise CompressionError("corrupt or foreign file: decoding left bits on the stack")


def _check_waves(waves, leaves):
    """Refuse a wave list no encoder writes (0: a unit coded alone, n >= 1: a wave of n units):
    lengths that do not add up to the units, or a wave whose units are not single tiles of one
    shape with bits back."""
    covered = sum(max(n, 1) for n in waves)
    if covered != len(leaves):
        raise CompressionError(f"corrupted file: its waves cover {covered} blocks, the image has {len(leaves)}")
    end = 0
    for n in waves:
        members = leaves[end : end + max(n, 1)]
        end += max(n, 1)
        if n > 0 and not all(
            len(m) == 1 and m[0].bits_back and m[0].tile[2:] == members[0][0].tile[2:] for m in members
        ):
            raise CompressionError("corrupted file: a wave of its layout holds tiles no encoder codes together")


def decompress_image(model, params, blob, *, chunk_pixels=None, progress=None):
    """The uint8 ``(H, W, n)`` pixels that ``compress_image`` coded into ``blob``, bit for bit
    (``read_header(blob)["mode"]`` says how to write them). ``chunk_pixels`` as in
    ``compress_image``, free to differ from the encoder's.

    Raises ``CompressionError`` (a ``ValueError``) for a truncated or corrupted file, another
    version, one made by another model or params or by another program, or one whose decoded
    image fails the file's checksum: never returns another image than the one coded.
    """
    check_codable(model)
    blob = bytes(blob)
    fields = read_header(blob)
    if fields["model_hash"] != model_hash(model, params):
        raise CompressionError(
            "this file was made by a different model or params (model hash mismatch); "
            "decode it with the model that compressed it"
        )
    layout_bytes = layout_size(fields, len(blob))
    _check_fits_model(model, fields, layout_bytes)
    image_hw, tile_hw = (fields["height"], fields["width"]), (fields["tile_height"], fields["tile_width"])
    channels = model.data_shape[-1]
    num_planes = -(-fields["channels"] // channels)
    units = _units(model, image_hw, tile_hw, num_planes)
    region = blob[_HEADER.size : _HEADER.size + layout_bytes]
    waves, wave_bytes = _read_varints(region, len(units))
    bits = np.unpackbits(np.frombuffer(region[wave_bytes:], np.uint8), bitorder="little")
    leaves, used = _decode_layout(bits, units, image_hw, bitsback.tile_unit(model))
    if layout_bytes - wave_bytes != -(-used // 8) or bits[used:].any():
        raise CompressionError(f"corrupted file: {len(blob)} bytes do not match its header and tile layout")
    _check_waves(waves, leaves)
    words = np.frombuffer(blob, "<u4", fields["num_words"], _HEADER.size + layout_bytes).astype(np.uint32)
    coder = bitsback.TileCoder(model, params, fields["bin_log2"], fields["max_abs"], chunk_pixels)
    planes = np.zeros((num_planes, *image_hw, channels), np.uint8)
    try:
        _decode_tiles(coder, words, leaves, waves, planes, progress)
    except BaseException as error:
        if not _is_coder_error(error):
            raise
        raise CompressionError(
            f"corrupt or foreign file: its ANS stream does not decode ({type(error).__name__}: {error})"
        ) from error
    image = join_planes(list(planes), fields["channels"])
    if image_checksum(blob[: _HEADER.size], image) != blob[-_TRAILER_BYTES:-_CRC.size]:
        raise CompressionError(
            "corrupt or foreign file: the decoded image fails the file's checksum (edited or written by another "
            "program, or decoded on a platform whose networks round differently from the encoder's)"
        )
    return image


# ---------------------------------------------------------------- compress and verify


def _checked_images(images, modes, bin_log2, max_abs=DEFAULT_MAX_ABS):
    if modes is None:
        modes = [None] * len(images)
    if len(modes) != len(images):
        raise ValueError(f"modes: expected one per image ({len(images)}), got {len(modes)}")
    checked = []
    for pixels, mode in zip(images, modes):
        image = _as_pixels(pixels)
        mode = default_mode(image.shape[-1]) if mode is None else mode
        _check_settings(image, mode, bin_log2, max_abs)
        checked.append((image, mode))
    return checked


def _compress_verified_many(model, params, images, modes, *, tile_size, bin_log2, chunk_pixels, progress, verify=True,
                            max_wave=MAX_WAVE):  # fmt: skip
    """Code the images together once (``compress_images``) and, with ``verify``, decode each file
    once, refusing a file that does not decode to its image. Returns per image the file, its
    coded tiles (``_Coded``), the checked uint8 ``(H, W, n)`` image and what coding measured
    (``run_compression``'s dict, less its ``file``; encoding's time is the whole call's)."""
    check_codable(model)
    if not images:
        raise ValueError("images: expected at least one image")
    checked = _checked_images(images, modes, bin_log2)
    started = time.perf_counter()
    files = _encode_many(model, params, [image for image, _ in checked], [mode for _, mode in checked], tile_size,
                         bin_log2, DEFAULT_MAX_ABS, chunk_pixels, progress, max_wave)  # fmt: skip
    encode_seconds = time.perf_counter() - started
    all_megapixels = sum(image.shape[0] * image.shape[1] for image, _ in checked) / 1e6
    results = []
    for (image, mode), (blob, coded) in zip(checked, files):
        decode_seconds = None
        if verify:
            started = time.perf_counter()
            decoded = decompress_image(model, params, blob, chunk_pixels=chunk_pixels, progress=progress)
            decode_seconds = time.perf_counter() - started
            if not np.array_equal(decoded, image):
                raise CompressionError("the decoded image differs from the input: this coder is broken here")
        dims, flags, tile_bits = _per_tile(model, image, coded)
        megapixels = image.shape[0] * image.shape[1] / 1e6
        sides = {}
        for c in coded:
            key = "x".join(map(str, c.tile.padded_hw))
            sides[key] = sides.get(key, 0) + 1
        measures = {
            "image_shape": list(image.shape),
            "mode": mode,
            "tile_hw": list(tile_hw_for(model, tile_size)),
            "tiles": int(flags.size),
            "tiles_without_bits_back": int((~flags).sum()),
            "tile_sizes": dict(sorted(sides.items(), key=lambda item: -item[1])),
            "file_bytes": len(blob),
            "bits_per_dim": 8 * len(blob) / image.size,
            "net_bits_per_dim": float(tile_bits[flags].sum() / dims[flags].sum()) if flags.any() else None,
            "stack_bits": float(tile_bits.sum()),
            "layout_bits": 8 * layout_size(read_header(blob), len(blob)),
            "header_bits": 8 * (_HEADER.size + _TRAILER_BYTES),
            "round_trip_exact": True if verify else None,
            "images_coded_together": len(checked),
            "encode_seconds": encode_seconds,
            "decode_seconds": decode_seconds,
            "encode_mpps": all_megapixels / encode_seconds,
            "decode_mpps": None if decode_seconds is None else megapixels / decode_seconds,
        }
        results.append((blob, coded, image, measures))
    return results


def _compress_verified(model, params, pixels, *, mode, tile_size, bin_log2, chunk_pixels, progress, verify=True):
    """``_compress_verified_many`` of one image."""
    return _compress_verified_many(
        model, params, [pixels], [mode], tile_size=tile_size, bin_log2=bin_log2, chunk_pixels=chunk_pixels,
        progress=progress, verify=verify,
    )[0]  # fmt: skip


def compress_images(model, params, images, *, modes=None, tile_size=None, bin_log2=DEFAULT_BIN_LOG2,
                    max_abs=DEFAULT_MAX_ABS, chunk_pixels=None, progress=None, max_wave=MAX_WAVE) -> list[bytes]:  # fmt: skip
    """One file per image (each ``compress_image``'s format, decoded alone by ``decompress_image``),
    the images coded together: each on its own ANS stack, the waves of one tile shape from every
    image running through the networks in the same calls. ``modes`` one per image (default
    ``default_mode``); the rest as ``compress_image``."""
    check_codable(model)
    if not images:
        raise ValueError("images: expected at least one image")
    checked = _checked_images(images, modes, bin_log2, max_abs)
    files = _encode_many(model, params, [image for image, _ in checked], [mode for _, mode in checked], tile_size,
                         bin_log2, max_abs, chunk_pixels, progress, max_wave)  # fmt: skip
    return [blob for blob, _ in files]


def _image_dims(model, image, plane, tile):
    """The image dims a tile of ``plane`` holds: its pixels times the image channels in that plane
    (a grey image's plane (v, v, v) holds one), so that every rate is per image dim, as bits_per_dim."""
    channels = model.data_shape[-1]
    return tile.valid_hw[0] * tile.valid_hw[1] * min(channels, image.shape[-1] - plane * channels)


def _per_tile(model, image, coded):
    """Arrays over the coded tiles: the image dims each holds, whether it had bits back, its bits."""
    dims = np.array([_image_dims(model, image, c.plane, c.tile) for c in coded])
    return dims, np.array([c.bits_back for c in coded], bool), np.array([c.bits for c in coded], float)


def run_compression(model, params, pixels, *, out_path, mode=None, tile_size=None, force=False, progress=None,
                    report=False, seed=None, verify=True):  # fmt: skip
    """Code ``pixels`` once, verify by decoding once (unless not ``verify``), then write the file to ``out_path`` (never
    over an existing file unless ``force``; checked before any work). Returns what coding
    measured, a dict of JSON-ready numbers (and the ``image_shape``, ``mode``, ``tile_hw`` and
    the ``file``'s path):

    - ``file_bytes``; ``bits_per_dim``: the whole file over the image's ``H * W * n`` dims (header,
      tile layout, checksum, CRC and the chain start included);
    - ``net_bits_per_dim``: the stack's growth over the tiles coded with bits back, over the image
      dims they hold: the rate a long image approaches (None if no tile had bits back: an image
      of one unit);
    - ``tiles`` (the quadtree's leaves, every plane), ``tile_sizes`` (padded ``"HxW"``: count),
      ``tiles_without_bits_back``, ``stack_bits`` (all the tiles added), ``layout_bits`` (the
      quadtree, padded to a byte), ``header_bits`` (the header, the image's checksum and the CRC);
    - ``encode_seconds``, ``decode_seconds``, ``encode_mpps``, ``decode_mpps`` (megapixels, H * W,
      per second, planes together; the first image of a tile shape includes compiling for it);
      ``round_trip_exact`` (True: a mismatch raises ``CompressionError``; None, and no decode
      time, without ``verify``); ``images_coded_together`` (1 here).

    With ``report``, also ``compression_report``'s comparison (its -ELBO passes and the codecs',
    ``seed`` fixing the -ELBO's draws, default 0)."""
    from vae_jax.images import check_writable

    if seed is not None and not report:
        raise ValueError(f"seed: fixes the report's -ELBO draws; pass report=True with it (got seed={seed!r})")
    if report and not verify:
        raise ValueError("verify: the report decodes the file (it times the decoder); keep verify=True with report=True")
    out_path = check_writable(out_path, force=force)
    if report:
        blob, measures = compression_report(
            model, params, pixels, mode=mode, seed=seed or 0, tile_size=tile_size, progress=progress
        )
    else:
        blob, _, _, measures = _compress_verified(
            model, params, pixels, mode=mode, tile_size=tile_size, bin_log2=DEFAULT_BIN_LOG2, chunk_pixels=None,
            progress=progress, verify=verify,
        )  # fmt: skip
    out_path.write_bytes(blob)
    return {**measures, "file": str(out_path)}


def run_compressions(model, params, images, *, out_paths, modes=None, tile_size=None, force=False, progress=None,
                     verify=True):  # fmt: skip
    """``run_compression`` of many images coded together (``compress_images``): every path of
    ``out_paths`` (one per image) checked before any work, each file verified by decoding it alone
    (unless not ``verify``), then all written. Returns ``run_compression``'s dict per image; the
    encoding time and MP/s are the whole call's."""
    from vae_jax.images import check_writable

    if len(out_paths) != len(images):
        raise ValueError(f"out_paths: expected one per image ({len(images)}), got {len(out_paths)}")
    paths = [check_writable(path, force=force) for path in out_paths]
    if len(set(paths)) != len(paths):
        raise ValueError("out_paths: two images would be written to the same file")
    results = _compress_verified_many(
        model, params, images, modes, tile_size=tile_size, bin_log2=DEFAULT_BIN_LOG2, chunk_pixels=None,
        progress=progress, verify=verify,
    )  # fmt: skip
    written = []
    for path, (blob, _, _, measures) in zip(paths, results):
        path.write_bytes(blob)
        written.append({**measures, "file": str(path)})
    return written


# ---------------------------------------------------------------- report


@partial(jax.jit, static_argnums=0)
def _tile_elbo(model, params, tile, valid, keys):
    """ELBO in nats of one padded tile, one value per key: E_q[log p(x_valid | z)] - sum_g KL_g,
    x_valid the tile's image pixels (``valid`` (h, w)), every latent (the padding's too: they are coded)."""
    batch = jnp.broadcast_to(tile, (keys.shape[0], *tile.shape))
    terms = model.infer(params, batch, keys)
    log_px = model.likelihood.log_prob(batch.astype(jnp.float32), terms.decoder_out)  # (keys, h, w): per pixel
    return jnp.sum(jnp.where(valid, log_px, 0.0), axis=(1, 2)) - sum(terms.kl_groups)


def _tiles_neg_elbo_bits(model, params, planes, tiles, key, samples):
    """Per tile, ``tiles`` a sequence of (plane index, ``Tile``): the -ELBO in bits averaged over
    ``samples`` draws, and the variance of one draw's -log2 p(x|z) + log2 q(z|x) / p(z) term
    (0 for one sample): a coded tile pays one such draw, so this is the spread of its net cost."""
    means, variances = [], []
    for p, tile in tiles:
        key, tile_key = jax.random.split(key)
        rows, cols = np.indices(tile.padded_hw)
        valid = (rows < tile.valid_hw[0]) & (cols < tile.valid_hw[1])
        tile_pixels = _cut(planes[p], tile).astype(np.int32)
        bits = -np.asarray(_tile_elbo(model, params, tile_pixels, valid, jax.random.split(tile_key, samples)), np.float64)
        bits /= math.log(2.0)
        means.append(bits.mean())
        variances.append(bits.var(ddof=1) if samples > 1 else 0.0)
    return np.array(means), np.array(variances)


@partial(jax.jit, static_argnums=0)
def _forward(model, params, tiles, keys):
    """The model's whole pass over a batch of tiles: encoder, one posterior draw, decoder."""
    return model.infer(params, tiles, keys).decoder_out


FORWARD_BATCH = 64


def forward_pass_mpps(model, params, planes, grid, batch=FORWARD_BATCH) -> float:
    """Megapixels a second of the model's batched forward pass (``_forward``, ``batch`` tiles a call)
    over the ``grid`` tiles of ``planes``, after one call to compile: the rate a coder that only ran
    the networks would reach, the ceiling for the coder's own speed."""
    cuts = [_cut(planes[p], tile) for p, tile in grid]
    height, width = max(c.shape[0] for c in cuts), max(c.shape[1] for c in cuts)
    # Border tiles are smaller: padded to the full tile, as one batched call must be.
    tiles = np.stack([np.pad(c, ((0, height - c.shape[0]), (0, width - c.shape[1]), (0, 0)), mode="edge")
                      for c in cuts]).astype(np.float32)  # fmt: skip
    pad = -len(tiles) % batch
    tiles = np.concatenate([tiles, np.repeat(tiles[-1:], pad, axis=0)]) if pad else tiles
    key = jax.random.key(0)
    jax.block_until_ready(_forward(model, params, jnp.asarray(tiles[:batch]), jax.random.split(key, batch)))
    started = time.perf_counter()
    for begin in range(0, len(tiles), batch):
        keys = jax.random.split(jax.random.fold_in(key, begin), batch)
        out = _forward(model, params, jnp.asarray(tiles[begin : begin + batch]), keys)
    jax.block_until_ready(out)
    seconds = time.perf_counter() - started
    image_pixels = planes[0].shape[0] * planes[0].shape[1]
    return image_pixels / 1e6 / seconds


def compression_report(model, params, pixels, *, mode=None, seed=0, elbo_samples=1, tile_size=None,
                       chunk_pixels=None, progress=None, bin_log2=DEFAULT_BIN_LOG2):  # fmt: skip
    """Compress ``pixels`` once and decode the result once (what ``run_compression`` measures,
    ``_compress_verified``), then compare with the model's -ELBO and with the codecs a user would
    pick instead (``vae_jax.codecs``), timed in the same run. ``seed`` fixes the ELBO's draws;
    ``bin_log2`` is the latent grid (as ``compress_image``'s). Returns ``(blob, report)``;
    ``report`` is a dict of JSON-ready numbers, coding's measures and:

    - ``neg_elbo_bits_per_dim``: the -ELBO of the tiles coded with bits back (of every tile if
      none), over ``elbo_samples`` draws: the rate the net one should approach;
      ``net_spread_bits_per_dim``: the standard deviation of one draw's -ELBO over those tiles
      (0 with one sample): the coder pays one draw per tile, so the net rate scatters around the
      -ELBO by about this much; ``grid_neg_elbo_bits_per_dim``: the -ELBO of the whole image in
      plain ``tile_hw`` blocks (what the quadtree's smaller tiles cost is the difference);
    - ``chain_start_bits``: the bits the tiles without bits back added beyond their -ELBO (what
      starting the chain cost);
    - ``forward_mpps``: the model's batched forward pass over the image's tiles
      (``forward_pass_mpps``), the ceiling for ``encode_mpps`` and ``decode_mpps``;
    - ``png_`` / ``webp_`` / ``jxl_e7_`` / ``jxl_e9_`` ``bits_per_dim``, ``encode_mpps``,
      ``decode_mpps`` of the codecs on the same pixels and machine (``codecs.timed_rates``).
    """
    blob, coded, image, measures = _compress_verified(
        model, params, pixels, mode=mode, tile_size=tile_size, bin_log2=bin_log2, chunk_pixels=chunk_pixels,
        progress=progress,
    )  # fmt: skip
    planes = split_planes(image, model.data_shape[-1])
    keys = jax.random.split(jax.random.key(seed))
    neg_elbo, draw_variance = _tiles_neg_elbo_bits(
        model, params, planes, [(c.plane, c.tile) for c in coded], keys[0], elbo_samples
    )
    blocks = tile_layout(model, image.shape[:2], tuple(measures["tile_hw"]))
    grid = [(p, t) for p in range(len(planes)) for t in blocks]
    grid_neg_elbo, _ = _tiles_neg_elbo_bits(model, params, planes, grid, keys[1], elbo_samples)
    dims, flags, tile_bits = _per_tile(model, image, coded)
    chosen = flags if flags.any() else np.ones_like(flags)
    report = {
        **measures,
        "neg_elbo_bits_per_dim": float(neg_elbo[chosen].sum() / dims[chosen].sum()),
        "net_spread_bits_per_dim": float(np.sqrt(draw_variance[chosen].sum()) / dims[chosen].sum()),
        "grid_neg_elbo_bits_per_dim": float(
            grid_neg_elbo.sum() / sum(_image_dims(model, image, p, t) for p, t in grid)
        ),
        "chain_start_bits": float((tile_bits - neg_elbo)[~flags].sum()),
        "forward_mpps": forward_pass_mpps(model, params, planes, grid),
        **codecs.timed_rates(image, measures["mode"]),
    }
    return blob, report
