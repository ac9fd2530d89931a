"""Square crops of images of any size: fixed tiles, centre crops, and random crops with flips.

``CropSource`` trains on random crops of a few large images (the embedded photos, a folder).
Its epoch is as many crops as the training images hold non-overlapping tiles, and each image
contributes exactly its own tile count, so a large photo is seen in proportion to its area and
an epoch means "about one look at every pixel". Where a crop lands and whether it is mirrored
is drawn from ``epoch_rng(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vae_jax.data.errors import DataSourceError
from vae_jax.data.source import DataSource, epoch_rng, read_only


def tile_counts(height: int, width: int, size: int) -> tuple[int, int]:
    """Rows and columns of non-overlapping ``size`` x ``size`` tiles that fit in an image."""
    return height // size, width // size


def tiles(image: np.ndarray, size: int) -> np.ndarray:
    """The non-overlapping ``size`` x ``size`` tiles of ``(H, W, C)`` ``image``, row-major.

    Tile ``r * cols + c`` is ``image[r*size:(r+1)*size, c*size:(c+1)*size]``; the right and
    bottom margins that do not fill a tile are left out.
    """
    rows, cols = tile_counts(image.shape[0], image.shape[1], size)
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size, image.shape[2])
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, size, size, image.shape[2])


def downscaled(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` (uint8 (H, W, C)) reduced ``factor`` times by averaging each factor x factor block
    (Pillow's ``reduce``, a box filter): the image a camera of 1/factor the resolution takes."""
    if factor == 1:
        return image
    return _pixels(_picture(image).reduce(factor))


def enlarged(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` (uint8 (H, W, C)) enlarged ``factor`` times, bicubic: a stand-in for the same scene
    photographed at ``factor`` times the resolution, whose 32x32 tiles are smooth (a few percent of
    the scene each) where the source's tiles are busy."""
    if factor == 1:
        return image
    from PIL import Image

    height, width = image.shape[:2]
    return _pixels(_picture(image).resize((width * factor, height * factor), Image.Resampling.BICUBIC))


def _picture(image):
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _pixels(picture) -> np.ndarray:
    pixels = np.asarray(picture, np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def at_scales(images, scales, size: int, zooms=()) -> tuple[list[np.ndarray], list[int]]:
    """Every image at every downscaling factor in ``scales`` (1 = as it is) and enlarged by every
    factor in ``zooms``, where it still holds a ``size`` x ``size`` crop, and how many crops per
    epoch each copy gets: as many as its source has tiles at full resolution, whatever the copy's
    own size, so every scale is seen equally often (natural images look alike at every scale).

    Downscaled copies are what tiles of ImageNet 32x32 are (whole scenes, busy); enlarged copies
    are what tiles of a modern camera's full-resolution photograph are (smooth, a small part of
    the scene); training on the whole range is what lets a model code photographs of any size.
    """
    copies, crops = [], []
    for image in images:
        full_resolution_tiles = int(np.prod(tile_counts(image.shape[0], image.shape[1], size)))
        scaled = [downscaled(image, factor) for factor in scales] + [enlarged(image, factor) for factor in zooms]
        for copy in scaled:
            if min(copy.shape[:2]) >= size:
                copies.append(copy)
                crops.append(max(full_resolution_tiles, 1))
    return copies, crops


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of ``(H, W, C)`` ``image`` (H, W >= size)."""
    top = (image.shape[0] - size) // 2
    left = (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


@dataclass(frozen=True)
class PackedImages:
    """Images of different sizes, flattened into one buffer so crops are one vectorised gather."""

    buffer: np.ndarray  # uint8, every image's (H, W, C) pixels one after another
    offsets: np.ndarray  # int64 (n,): where each image starts in ``buffer``
    heights: np.ndarray  # int64 (n,)
    widths: np.ndarray  # int64 (n,)
    channels: int

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as an ``(H, W, C)`` view into ``buffer``."""
        shape = (int(self.heights[index]), int(self.widths[index]), self.channels)
        start = int(self.offsets[index])
        return self.buffer[start : start + int(np.prod(shape))].reshape(shape)


def pack_images(images: Sequence[np.ndarray]) -> PackedImages:
    """Pack uint8 ``(H_i, W_i, C)`` images (same C) into a ``PackedImages``."""
    channels = {image.shape[2] for image in images}
    if len(channels) != 1:
        raise DataSourceError(f"images to pack must share one channel count, got {sorted(channels)}")
    sizes = np.array([image.size for image in images], dtype=np.int64)
    return PackedImages(
        buffer=np.concatenate([image.ravel() for image in images]).astype(np.uint8, copy=False),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        heights=np.array([image.shape[0] for image in images], dtype=np.int64),
        widths=np.array([image.shape[1] for image in images], dtype=np.int64),
        channels=channels.pop(),
    )


@dataclass(frozen=True)
class CropPlan:
    """Where each crop comes from: image index, top-left corner, whether it is mirrored, and
    which source channel each of its channels reads (``None``: the image's own order)."""

    image: np.ndarray  # int64 (n,)
    top: np.ndarray  # int64 (n,)
    left: np.ndarray  # int64 (n,)
    flip: np.ndarray  # bool (n,)
    channel_order: np.ndarray | None = None  # int64 (n, C)
    saturation: np.ndarray | None = None  # float64 (n,): each crop's colour gain (``saturate``)

    def take(self, positions) -> CropPlan:
        """The crops at ``positions`` (an index array or a slice) of this plan."""
        pick = lambda a: None if a is None else a[positions]
        return CropPlan(
            self.image[positions], self.top[positions], self.left[positions], self.flip[positions],
            pick(self.channel_order), pick(self.saturation),
        )  # fmt: skip


def random_crop_plan(
    rng: np.random.Generator, heights: np.ndarray, widths: np.ndarray, crops_per_image: np.ndarray, size: int,
    permute_channels: int = 0, max_saturation: float = 1.0,
) -> CropPlan:  # fmt: skip
    """Image ``i`` gets ``crops_per_image[i]`` crops at uniform positions, in a shuffled order,
    each mirrored left-right with probability 1/2; when ``permute_channels`` is the channel
    count C, with its C channels in a uniformly random order (all C! equally likely); when
    ``max_saturation`` s > 1, with a colour gain drawn log-uniformly from [1/s, s]."""
    image = rng.permutation(np.repeat(np.arange(len(heights)), crops_per_image))
    top = rng.integers(0, heights[image] - size + 1)
    left = rng.integers(0, widths[image] - size + 1)
    flip = rng.integers(0, 2, size=len(image)).astype(bool)
    order = None
    if permute_channels:  # drawn last, so plans without it are what they always were
        order = rng.permuted(np.broadcast_to(np.arange(permute_channels), (len(image), permute_channels)), axis=1)
    gain = None
    if max_saturation > 1:
        gain = np.exp(rng.uniform(-np.log(max_saturation), np.log(max_saturation), size=len(image)))
    return CropPlan(image, top, left, flip, order, gain)


def saturate(crops: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Each uint8 RGB crop's colours pushed away from (gain > 1) or towards (gain < 1) its grey,

        x' = clip(round(m + g (x - m)), 0, 255),   m the pixel's mean over channels,

    clipped as a camera clips: saturated photographs (a yellow flower, a green leaf in sunlight)
    have whole channels at 0 or 255, which a few ordinary photos almost never show."""
    grey = crops.mean(axis=-1, keepdims=True)
    pushed = grey + gain[:, None, None, None] * (crops - grey)
    return np.clip(np.rint(pushed), 0, 255).astype(np.uint8)


def gather_crops(packed: PackedImages, plan: CropPlan, size: int) -> np.ndarray:
    """The crops ``plan`` describes, uint8 ``(n, size, size, C)``, by fancy-indexing gathers."""
    crop_pixels = size * size * packed.channels
    # The gather builds an int64 index per output byte; chunking caps that at 32 MiB.
    chunk = max(1, 2**22 // crop_pixels)
    crops = np.empty((len(plan.image), size, size, packed.channels), dtype=np.uint8)
    for start in range(0, len(plan.image), chunk):
        part = plan.take(slice(start, start + chunk))
        crops[start : start + chunk] = packed.buffer[_crop_indices(packed, part, size)]
    if plan.saturation is not None:
        crops = saturate(crops, plan.saturation)
    return crops


def _crop_indices(packed: PackedImages, plan: CropPlan, size: int) -> np.ndarray:
    """Flat ``buffer`` indices ``(n, size, size, C)`` of the crops in ``plan``."""
    offset = np.arange(size)
    rows = plan.top[:, None] + offset  # (n, size)
    # A mirrored crop reads its columns right to left.
    cols = plan.left[:, None] + np.where(plan.flip[:, None], size - 1 - offset, offset)  # (n, size)
    channels = packed.channels
    row_starts = packed.offsets[plan.image][:, None] + rows * (packed.widths[plan.image][:, None] * channels)
    order = np.arange(channels)[None] if plan.channel_order is None else plan.channel_order
    return row_starts[:, :, None, None] + cols[:, None, :, None] * channels + order[:, None, None, :]


class CropSource(DataSource):
    """Random ``crop_size`` crops (with horizontal flips) of a few images of any size >= crop_size.

    ``test_images`` is fixed and given by the caller (tiles or centre crops); training examples
    per epoch: ``crops_per_image`` per image (default: each image's non-overlapping tiles), each
    with its colour channels in a random order if ``permute_channels`` and a colour gain up to
    ``max_saturation`` (``saturate``).
    """

    def __init__(
        self,
        name: str,
        train_images: Sequence[np.ndarray],
        test_images: np.ndarray,
        crop_size: int,
        crops_per_image: Sequence[int] | None = None,
        permute_channels: bool = False,
        max_saturation: float = 1.0,
    ):
        if not train_images:
            raise DataSourceError(f"{name}: no training images")
        small = [image.shape[:2] for image in train_images if min(image.shape[:2]) < crop_size]
        if small:
            raise DataSourceError(f"{name}: images {small} are smaller than crop_size={crop_size}")
        self.name = name
        self.crop_size = crop_size
        self._packed = pack_images(train_images)
        if crops_per_image is None:  # each image in proportion to its area
            crops_per_image = [np.prod(tile_counts(h, w, crop_size)) for h, w in zip(self._packed.heights, self._packed.widths)]
        if len(crops_per_image) != len(train_images) or min(crops_per_image) < 1:
            raise DataSourceError(
                f"{name}: crops_per_image needs one count >= 1 per training image ({len(train_images)}), "
                f"got {list(crops_per_image)}"
            )
        self._crops_per_image = np.asarray(crops_per_image, dtype=np.int64)
        self.image_shape = (crop_size, crop_size, self._packed.channels)
        # A colour photo's channels in any order are another plausible photo's (a green leaf is a
        # red one with R and G swapped): a few photos then cover every hue, not only their own.
        self._permute_channels = self._packed.channels if permute_channels and self._packed.channels > 1 else 0
        if not (isinstance(max_saturation, (int, float)) and max_saturation >= 1):
            raise DataSourceError(f"{name}: max_saturation must be a number >= 1 (1: off), got {max_saturation!r}")
        self._max_saturation = float(max_saturation) if self._packed.channels == 3 else 1.0
        self.num_train = int(self._crops_per_image.sum())
        self._test_images = read_only(test_images)

    def crop_plan(self, seed: int, epoch: int) -> CropPlan:
        """Every crop of epoch ``epoch`` in order (exposed so tests can check the epoch's makeup)."""
        rng = epoch_rng(seed, epoch)
        return random_crop_plan(
            rng, self._packed.heights, self._packed.widths, self._crops_per_image, self.crop_size,
            self._permute_channels, self._max_saturation,
        )  # fmt: skip

    def _epoch_examples(self, seed, epoch, positions):
        return gather_crops(self._packed, self.crop_plan(seed, epoch).take(positions), self.crop_size)

    def test_images(self):
        return self._test_images

    def train_images_and_labels(self):
        """The non-overlapping tiles of every training image (a fixed stand-in for its crops)."""
        images = [self._packed.image(i) for i in range(len(self._crops_per_image))]
        return np.concatenate([tiles(image, self.crop_size) for image in images]), None
