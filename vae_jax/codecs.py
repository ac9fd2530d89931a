"""The standard lossless codecs a model's rates are compared with, and their settings, in one
table for every comparison (``vae-jax compress --report``, ``benchmarks.compression``,
``photo_eval``): PNG and WebP-lossless through Pillow, each at its strongest setting (the
smallest file it makes, whatever it costs in time), so that the model is held against the best
a user would get from them. JPEG-XL lossless (``cjxl -d 0`` at efforts 7, its default, and 9,
then ``djxl``; Debian's ``libjxl-tools``) is timed as a user runs it, command and all, and is
left out (None) where the binaries are not installed: ``jpeg_xl_available()``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

# codec -> (Pillow format, save options)
SETTINGS = {
    "png": ("PNG", {"optimize": True}),
    "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 6}),
}
CODECS = tuple(SETTINGS)
# The image modes each codec stores exactly: WebP has no 16-bit grey.
EXACT_MODES = {"png": ("L", "LA", "RGB", "RGBA", "I;16"), "webp": ("L", "LA", "RGB", "RGBA")}
JPEG_XL_EFFORTS = (7, 9)
JPEG_XL_CODECS = tuple(f"jxl_e{effort}" for effort in JPEG_XL_EFFORTS)
JPEG_XL_MODES = ("L", "LA", "RGB", "RGBA", "I;16")


def encode(image, codec: str) -> bytes:
    """A Pillow ``image`` as a ``codec`` file, at its ``SETTINGS``."""
    if codec not in SETTINGS:
        raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")
    format_name, options = SETTINGS[codec]
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def jpeg_xl_available() -> bool:
    """Whether ``cjxl`` and ``djxl`` are on the PATH."""
    return shutil.which("cjxl") is not None and shutil.which("djxl") is not None


def jpeg_xl_round_trip(image, effort: int) -> tuple[int, float, float]:
    """(file bytes, encode seconds, decode seconds) of ``cjxl -d 0 -e EFFORT`` and ``djxl`` on a Pillow
    ``image``, each the wall time of the command; the decoded pixels are checked against the input."""
    from PIL import Image

    if not jpeg_xl_available():
        raise FileNotFoundError("cjxl/djxl: JPEG-XL's tools are not installed (apt-get install libjxl-tools)")
    with tempfile.TemporaryDirectory() as folder:
        source, coded = Path(folder) / "in.png", Path(folder) / "out.jxl"
        # PPM is the cheapest output djxl writes; alpha and 16-bit grey need PNG.
        decoded = Path(folder) / ("back.ppm" if image.mode == "RGB" else "back.png")
        image.save(source, format="PNG")
        started = time.perf_counter()
        subprocess.run(["cjxl", str(source), str(coded), "-d", "0", "-e", str(effort), "--quiet"],
                       check=True, capture_output=True)  # fmt: skip
        encode_seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run(["djxl", str(coded), str(decoded), "--quiet"], check=True, capture_output=True)
        decode_seconds = time.perf_counter() - started
        with Image.open(decoded) as back:
            if not np.array_equal(np.asarray(back), np.asarray(image)):
                raise RuntimeError(f"cjxl -d 0 -e {effort}: the decoded pixels differ from the input")
        return coded.stat().st_size, encode_seconds, decode_seconds


def timed_rates(pixels: np.ndarray, mode: str) -> dict:
    """Every codec on the same uint8 ``(H, W, n)`` pixels in their own ``mode``: ``{codec}_bits_per_dim``
    and ``{codec}_encode_mpps`` / ``{codec}_decode_mpps`` (megapixels per second, timed here), None
    for a codec that cannot store the mode exactly, and for JPEG-XL when its tools are missing."""
    from PIL import Image

    from vae_jax.images import to_pil

    image = to_pil(pixels, mode)
    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    results = {}
    for codec in CODECS:
        if mode not in EXACT_MODES[codec]:
            results.update({f"{codec}_{key}": None for key in ("bits_per_dim", "encode_mpps", "decode_mpps")})
            continue
        started = time.perf_counter()
        data = encode(image, codec)
        encode_seconds = time.perf_counter() - started
        started = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        decode_seconds = time.perf_counter() - started
        results[f"{codec}_bits_per_dim"] = 8 * len(data) / pixels.size
        results[f"{codec}_encode_mpps"] = megapixels / encode_seconds
        results[f"{codec}_decode_mpps"] = megapixels / decode_seconds
    for effort, codec in zip(JPEG_XL_EFFORTS, JPEG_XL_CODECS, strict=True):
        if not jpeg_xl_available() or mode not in JPEG_XL_MODES:
            results.update({f"{codec}_{key}": None for key in ("bits_per_dim", "encode_mpps", "decode_mpps")})
            continue
        size, encode_seconds, decode_seconds = jpeg_xl_round_trip(image, effort)
        results[f"{codec}_bits_per_dim"] = 8 * size / pixels.size
        results[f"{codec}_encode_mpps"] = megapixels / encode_seconds
        results[f"{codec}_decode_mpps"] = megapixels / decode_seconds
    return results
