"""``load_source``: one entry point from a spec string to a ``DataSource``."""

from __future__ import annotations

from vae_jax.checks import check_count
from vae_jax.data.channels import check_channels
from vae_jax.data.source import DataSource

SPECS = ("photos", "tfds:NAME", "folder:PATH", "idx:PATH")


def load_source(
    spec: str,
    *,
    crop_size: int = 32,
    channels: int | None = None,
    scales=(1,),
    zooms=(),
    permute_channels: bool = False,
    max_saturation: float = 1.0,
    data_dir=None,
    manual_dir=None,
    download: bool = False,
) -> DataSource:
    """Open the data source ``spec`` names.

    Args:
      spec: ``photos`` (the embedded photographs), ``tfds:NAME`` (a TFDS image dataset),
        ``folder:PATH`` (a directory of images) or ``idx:PATH`` (a directory of MNIST-format
        idx files).
      crop_size: side of the square crops of ``photos`` and ``folder``; TFDS and idx datasets
        keep their own image size.
      scales: ``photos`` and ``folder``: train on every image at each of these downscaling
        factors (1 = full resolution).
      zooms: ``photos`` and ``folder``: and at each of these enlarging factors (>= 2); every
        scale is seen equally often.
      permute_channels: ``photos`` and ``folder``: each training crop's colour channels in a
        random order (a few photos then cover every hue).
      max_saturation: ``photos`` and ``folder``: each training crop's colours pushed from or
        towards grey by a gain drawn log-uniformly from [1/s, s], clipped (1: off).
      channels: None keeps the source's channels; 1 converts to gray, 3 to colour.
      data_dir, manual_dir, download: TFDS only: where prepared datasets live, where archives
        for a manual build are, and whether it may download and build (default: never).
    """
    crop_size = check_count("crop_size", crop_size, 1)
    check_channels(channels)
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string, one of {SPECS}, got {spec!r}")
    scheme, colon, argument = spec.partition(":")
    # Imported per scheme, so opening one kind of source never imports the others' libraries.
    if spec == "photos":
        from vae_jax.data.photos import photos_source

        return photos_source(crop_size, channels, scales, zooms, permute_channels, max_saturation)
    if colon and argument and scheme == "tfds":
        from vae_jax.data.tfds_source import tfds_source

        return tfds_source(
            argument, channels=channels, data_dir=data_dir, manual_dir=manual_dir, download=download
        )
    if colon and argument and scheme == "folder":
        from vae_jax.data.folder import folder_source

        return folder_source(argument, crop_size, channels, scales, zooms, permute_channels, max_saturation)
    if colon and argument and scheme == "idx":
        from vae_jax.data.idx import idx_source

        return idx_source(argument, channels)
    raise ValueError(f"spec: expected one of {', '.join(SPECS)}, got {spec!r}")
