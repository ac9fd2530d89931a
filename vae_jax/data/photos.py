"""The embedded default: natural colour photographs that installed packages ship, so a demo
trains offline with no download.

Training draws random ``crop_size`` crops (mirrored at random) from scikit-image's astronaut,
coffee, rocket, both views of stereo_motorcycle, retina (a fundus photograph, at half its
resolution so that it does not outweigh the others) and ihc (immunohistochemistry under a
microscope), and scikit-learn's china and flower, at full resolution and at the downscaling
(``scales``) and enlarging (``zooms``) factors asked for. Retina's large smooth areas are what the
other photos lack and what models trained without them lost most bits on (smooth high-resolution
photographs). scikit-image's one other colour photograph, hubble_deep_field, is left out: half its
pixels are black sky. The test set is the non-overlapping tiles of scikit-image's chelsea (the cat),
row-major: a photo the model never trains on. At 32 x 32 that is 2,682 full-resolution training
tiles (an epoch; more with other scales) and 9 x 14 = 126 test tiles.
"""

from __future__ import annotations

import functools

import numpy as np

from vae_jax.checks import check_count, check_scales, check_zooms
from vae_jax.data.channels import convert_channels
from vae_jax.data.crops import CropSource, at_scales, downscaled, tiles
from vae_jax.data.errors import DataSourceError

TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "stereo_motorcycle_left",
    "stereo_motorcycle_right",
    "china",
    "flower",
    "retina",
    "ihc",
)
TEST_PHOTO = "chelsea"


@functools.lru_cache(maxsize=1)
def load_photos() -> dict[str, np.ndarray]:
    """Every photo by name, uint8 ``(H, W, 3)``, read-only (they are cached and shared)."""
    # Imported here: scikit-learn and scikit-image take a while to import and only this needs them.
    from skimage import data as skimage_data
    from sklearn.datasets import load_sample_images

    left, right, _disparity = skimage_data.stereo_motorcycle()
    china, flower = load_sample_images().images
    photos = {
        "astronaut": skimage_data.astronaut(),
        "coffee": skimage_data.coffee(),
        "chelsea": skimage_data.chelsea(),
        "rocket": skimage_data.rocket(),
        "stereo_motorcycle_left": left,
        "stereo_motorcycle_right": right,
        "china": china,
        "flower": flower,
        "retina": downscaled(skimage_data.retina(), 2),
        "ihc": skimage_data.immunohistochemistry(),
    }
    for photo in photos.values():
        photo.flags.writeable = False
    return photos


@functools.lru_cache(maxsize=4)
def _training_copies(crop_size, channels, scales, zooms):
    """``at_scales`` of the training photos, read-only and cached: enlarging them takes most of a
    second, and tests and tools open the same source many times."""
    photos = [convert_channels(load_photos()[name], channels) for name in TRAIN_PHOTOS]
    copies, crops = at_scales(photos, scales, crop_size, zooms)
    for copy in copies:
        copy.flags.writeable = False
    return tuple(copies), tuple(crops)


def photos_source(
    crop_size: int = 32, channels: int | None = None, scales=(1,), zooms=(), permute_channels: bool = False,
    max_saturation: float = 1.0,
) -> CropSource:
    """The embedded photos as a ``CropSource`` of ``crop_size`` crops (colour, or gray if channels=1),
    training on every photo at each downscaling factor in ``scales`` and enlarging factor in
    ``zooms``, each scale equally often (``crops.at_scales``), colour channels in random orders if
    ``permute_channels`` and colour gains up to ``max_saturation``."""
    crop_size = check_count("crop_size", crop_size, 1)
    scales, zooms = check_scales(scales), check_zooms(zooms)
    photos = {name: convert_channels(photo, channels) for name, photo in load_photos().items()}
    smallest = min(min(photo.shape[:2]) for photo in photos.values())
    if crop_size > smallest:
        raise DataSourceError(f"crop_size: the photos need crop_size <= {smallest} pixels, got {crop_size}")
    train_images, crops_per_image = _training_copies(crop_size, channels, scales, zooms)
    return CropSource(
        name="photos",
        train_images=train_images,
        test_images=tiles(photos[TEST_PHOTO], crop_size),
        crop_size=crop_size,
        crops_per_image=crops_per_image,
        permute_channels=permute_channels,
        max_saturation=max_saturation,
    )
