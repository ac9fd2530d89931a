"""A folder of the user's own images (any sizes) as a ``CropSource``.

Files: ``.png .jpg .jpeg .bmp .webp .gif`` (any case), found recursively and sorted by path;
a GIF gives its first frame; colour modes are converted by Pillow to RGB or, with ``channels=1``,
to 8-bit gray; 16-bit images are scaled to 8 bits; an alpha channel is dropped, with one warning. An image with a side shorter than ``size`` is first enlarged
(bicubic, aspect ratio kept) until its shorter side is ``size``; larger images are used at their
own resolution, so training sees random ``size`` crops of them, as with the embedded photos.

The test split is fixed by the sorted order: about one file in ten, spread evenly through the
list (at least one when there are two files or more); each test image is its centre crop. The
rest train. All images are decoded into memory when the source is opened.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from vae_jax.checks import check_count, check_scales, check_zooms
from vae_jax.data.channels import check_channels
from vae_jax.data.crops import CropSource, at_scales, center_crop
from vae_jax.data.errors import DataSourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
TEST_FRACTION = 0.1


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def held_out_file_indices(num_files: int) -> np.ndarray:
    """Indices of the test files: ``round(10%)`` (>= 1 once there are 2 files), evenly spread.

    Spread rather than the last few, so a folder sorted by class (``cats/``, ``dogs/``) still
    tests on every class.
    """
    if num_files < 2:
        return np.zeros(0, dtype=np.int64)
    num_test = max(1, round(TEST_FRACTION * num_files))
    return ((np.arange(num_test) + 0.5) * num_files / num_test).astype(np.int64)


def read_image(path: Path, size: int, channels: int | None) -> tuple[np.ndarray, bool]:
    """One file as uint8 ``(H, W, C)`` with ``min(H, W) >= size`` (enlarged if it was smaller),
    and whether it had an alpha channel (dropped). 16-bit images are scaled to 8 bits."""
    from PIL import Image

    from vae_jax.images import read_8bit

    try:
        pixels, dropped_alpha = read_8bit(path, 1 if channels == 1 else 3)
    except (OSError, ValueError) as error:
        raise DataSourceError(f"{path}: cannot read image ({error})") from None
    height, width = pixels.shape[:2]
    if min(width, height) < size:
        scale = size / min(width, height)
        new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        pixels = np.asarray(image.resize(new_size, Image.Resampling.BICUBIC), dtype=np.uint8)
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return pixels, dropped_alpha


def folder_source(
    path: str | Path, crop_size: int = 32, channels: int | None = None, scales=(1,), zooms=(),
    permute_channels: bool = False, max_saturation: float = 1.0,
) -> CropSource:
    """The images under ``path`` as a ``CropSource`` of ``crop_size`` crops (RGB, or gray if channels=1),
    the training images at each downscaling factor in ``scales`` and enlarging factor in ``zooms``,
    each scale equally often (``crops.at_scales``), colour channels in random orders if
    ``permute_channels`` and colour gains up to ``max_saturation``."""
    crop_size = check_count("crop_size", crop_size, 1)
    scales, zooms = check_scales(scales), check_zooms(zooms)
    check_channels(channels)
    folder = Path(path)
    if not folder.exists():
        raise DataSourceError(f"folder: {folder} does not exist")
    if not folder.is_dir():
        raise DataSourceError(f"folder: {folder} is not a directory")
    files = list_image_files(folder)
    if not files:
        raise DataSourceError(f"folder: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")

    is_test = np.zeros(len(files), dtype=bool)
    is_test[held_out_file_indices(len(files))] = True
    images, dropped_alpha = zip(*(read_image(file, crop_size, channels) for file in files))
    if any(dropped_alpha):
        warnings.warn(
            f"folder: {sum(dropped_alpha)} of {len(files)} images under {folder} have an alpha channel; "
            f"it is dropped (the models learn colour, not transparency)",
            stacklevel=2,
        )
    test = [center_crop(image, crop_size) for image, test in zip(images, is_test) if test]
    depth = images[0].shape[2]
    train = [image for image, test in zip(images, is_test) if not test]
    train_images, crops_per_image = at_scales(train, scales, crop_size, zooms)
    return CropSource(
        name=f"folder:{folder}",
        train_images=train_images,
        test_images=np.stack(test) if test else np.zeros((0, crop_size, crop_size, depth), dtype=np.uint8),
        crop_size=crop_size,
        crops_per_image=crops_per_image,
        permute_channels=permute_channels,
        max_saturation=max_saturation,
    )
