"""The classical lossy codecs a learned codec is compared with, each as a user gets it, and the
setting sweeps that trace their rate-distortion curves.

============  ==========================================  ======================================
codec         encoder                                     ``setting`` (higher = better unless said)
============  ==========================================  ======================================
``jpeg``      Pillow (libjpeg), ``optimize=True``,        ``quality`` 1..95
              its default 4:2:0 chroma subsampling
``webp``      Pillow (libwebp), ``method=6`` (slowest,    ``quality`` 0..100
              smallest)
``avif``      Pillow (libavif), default ``speed`` 6 and   ``quality`` 0..100 (libavif's scale:
              4:2:0 (4:0:0 for grey)                      100 is the best)
``jxl``       ``cjxl -d DISTANCE -e 7`` then ``djxl``     butteraugli ``distance`` (0, 25]:
              (Debian's ``libjxl-tools``)                 **lower** is better
============  ==========================================  ======================================

``round_trip`` codes uint8 pixels, grey ``(H, W)`` / ``(H, W, 1)`` or RGB ``(H, W, 3)``, and
decodes them back in the input's shape, timing each side: the Pillow codecs in memory (the
``save`` into a buffer, the ``open`` and ``load`` out of it); JPEG-XL as the wall time of each
command, reading and writing the cheapest raw formats (PGM / PPM), start-up included, as a
user runs it. Each library uses the threads it picks by default (libavif and libjxl use several).
Grey WebP: libwebp codes RGB only, so a grey image is coded as RGB and its decoded RGB converted
back to grey (Pillow's ITU-R 601 luma of nearly equal channels).

``DEFAULT_SETTINGS`` spans roughly 0.1 to 1.5 bits per pixel on photographs, best quality last
for every codec, so that the curves overlap with each other and with a learned codec's.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vae_jax.codecs import jpeg_xl_available

CODECS = ("jpeg", "webp", "avif", "jxl")
# Each sweep from the lowest rate to the highest (JPEG-XL's distance falls as the rate rises).
DEFAULT_SETTINGS = {
    "jpeg": (5, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    "webp": (5, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    "avif": (10, 20, 30, 40, 50, 60, 70, 80, 90),
    "jxl": (8.0, 6.0, 4.5, 3.5, 2.5, 2.0, 1.5, 1.0, 0.75, 0.5),
}
SETTING_RANGES = {"jpeg": (1, 95), "webp": (0, 100), "avif": (0, 100)}  # integer qualities, inclusive
JPEG_XL_MAX_DISTANCE = 25.0
JPEG_XL_EFFORT = 7
INSTALL_HINTS = {
    "webp": "Pillow built with libwebp (pip install --force-reinstall pillow: its wheels include it)",
    "avif": "Pillow >= 11.2 built with libavif (pip install -U pillow: its wheels include it)",
    "jxl": "the cjxl/djxl binaries (apt-get install libjxl-tools)",
}


class LossyResult(NamedTuple):
    """One coded image: the file's size, the decoded pixels (the input's shape, uint8) and the
    seconds its encoder and decoder took."""

    num_bytes: int
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


class CodecUnavailableError(RuntimeError):
    """A codec whose library or binaries are not installed here."""


def codec_available(codec: str) -> bool:
    """Whether ``codec`` (one of ``CODECS``) can run here."""
    _check_codec(codec)
    if codec == "jxl":
        return jpeg_xl_available()
    if codec == "jpeg":
        return True  # Pillow always has libjpeg
    from PIL import features

    return bool(features.check(codec))


def available_codecs() -> tuple[str, ...]:
    """The codecs of ``CODECS`` installed here, in that order."""
    return tuple(codec for codec in CODECS if codec_available(codec))


def _check_codec(codec) -> None:
    if codec not in CODECS:
        raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")


def check_setting(codec: str, setting) -> int | float:
    """``setting`` for ``codec`` as the number its encoder takes, or a ``ValueError`` naming the range."""
    _check_codec(codec)
    if isinstance(setting, bool) or not isinstance(setting, (int, float, np.integer, np.floating)):
        raise ValueError(f"setting: expected a number for {codec}, got {setting!r}")
    if codec == "jxl":
        if not 0 < float(setting) <= JPEG_XL_MAX_DISTANCE:
            raise ValueError(f"setting: jxl's distance must lie in (0, {JPEG_XL_MAX_DISTANCE}], got {setting}")
        return float(setting)
    low, high = SETTING_RANGES[codec]
    if int(setting) != setting or not low <= setting <= high:
        raise ValueError(f"setting: {codec}'s quality must be an integer in {low}..{high}, got {setting}")
    return int(setting)


def _check_pixels(pixels) -> np.ndarray:
    """uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` pixels as an ``(H, W)`` grey or ``(H, W, 3)`` array."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels: expected uint8 0..255, got dtype {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (1, 3))) or 0 in pixels.shape:
        raise ValueError(f"pixels: expected grey (H, W) or (H, W, 1), or RGB (H, W, 3), got shape {pixels.shape}")
    return np.ascontiguousarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)


def _pillow_options(codec: str, setting) -> tuple[str, dict]:
    if codec == "jpeg":
        return "JPEG", {"quality": setting, "optimize": True}
    if codec == "webp":
        return "WEBP", {"quality": setting, "method": 6}
    return "AVIF", {"quality": setting}


def _pillow_round_trip(planes: np.ndarray, codec: str, setting) -> tuple[bytes, np.ndarray, float, float]:
    from PIL import Image

    format_name, options = _pillow_options(codec, setting)
    mode = "L" if planes.ndim == 2 else "RGB"
    image = Image.fromarray(planes, mode)
    buffer = io.BytesIO()
    started = time.perf_counter()
    image.save(buffer, format=format_name, **options)
    encode_seconds = time.perf_counter() - started
    data = buffer.getvalue()
    started = time.perf_counter()
    with Image.open(io.BytesIO(data)) as back:
        back.load()
        decoded = np.asarray(back if back.mode == mode else back.convert(mode))
    return data, decoded, encode_seconds, time.perf_counter() - started


def _jpeg_xl_round_trip(planes: np.ndarray, distance: float) -> tuple[bytes, np.ndarray, float, float]:
    from PIL import Image

    suffix = ".pgm" if planes.ndim == 2 else ".ppm"
    with tempfile.TemporaryDirectory() as folder:
        source, coded, back = (Path(folder) / name for name in (f"in{suffix}", "out.jxl", f"back{suffix}"))
        Image.fromarray(planes).save(source)
        started = time.perf_counter()
        subprocess.run(
            ["cjxl", str(source), str(coded), "-d", f"{distance:g}", "-e", str(JPEG_XL_EFFORT), "--quiet"],
            check=True, capture_output=True,
        )  # fmt: skip
        encode_seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(["djxl", str(coded), str(back), "--quiet"], check=True, capture_output=True)
        decode_seconds = time.perf_counter() - started
        with Image.open(back) as image:
            decoded = np.asarray(image.convert("L" if planes.ndim == 2 else "RGB"))
        return coded.read_bytes(), decoded, encode_seconds, decode_seconds


def round_trip(pixels_uint8_hwc, codec: str, setting) -> LossyResult:
    """Encode uint8 grey or RGB pixels with ``codec`` at ``setting`` (the module's table), decode them,
    and time both sides. The decoded array has the input's shape and dtype. Raises
    ``CodecUnavailableError`` (saying how to install it) for a codec missing here, ``ValueError`` for
    other shapes or dtypes, or a setting outside the codec's range."""
    planes = _check_pixels(pixels_uint8_hwc)
    setting = check_setting(codec, setting)
    if not codec_available(codec):
        raise CodecUnavailableError(f"{codec}: not available here; it needs {INSTALL_HINTS[codec]}")
    if codec == "jxl":
        data, decoded, encode_seconds, decode_seconds = _jpeg_xl_round_trip(planes, setting)
    else:
        data, decoded, encode_seconds, decode_seconds = _pillow_round_trip(planes, codec, setting)
    shape = np.shape(pixels_uint8_hwc)
    if decoded.shape != planes.shape:
        raise RuntimeError(f"{codec} at {setting}: decoded {decoded.shape} pixels from a {planes.shape} image")
    return LossyResult(len(data), np.ascontiguousarray(decoded.reshape(shape)), encode_seconds, decode_seconds)
