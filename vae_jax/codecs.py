"""The standard lossless codecs a model's rates are compared with, and their settings, in one
table for every comparison (``vae-jax compress --report``, ``benchmarks.compression``,
``photo_eval``): PNG and WebP-lossless through Pillow, each at its strongest setting (the
smallest file it makes, whatever it costs in time), so that the model is held against the best
a user would get from them.
"""

from __future__ import annotations

import io
import time

import numpy as np

# codec -> (Pillow format, save options)
SETTINGS = {
    "png": ("PNG", {"optimize": True}),
    "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 6}),
}
CODECS = tuple(SETTINGS)
# The image modes each codec stores exactly: WebP has no 16-bit grey.
EXACT_MODES = {"png": ("L", "LA", "RGB", "RGBA", "I;16"), "webp": ("L", "LA", "RGB", "RGBA")}


def encode(image, codec: str) -> bytes:
    """A Pillow ``image`` as a ``codec`` file, at its ``SETTINGS``."""
    if codec not in SETTINGS:
        raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")
    format_name, options = SETTINGS[codec]
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def timed_rates(pixels: np.ndarray, mode: str) -> dict:
    """Every codec on the same uint8 ``(H, W, n)`` pixels in their own ``mode``: ``{codec}_bits_per_dim``
    and ``{codec}_encode_mpps`` / ``{codec}_decode_mpps`` (megapixels per second, timed here), None
    for a codec that cannot store the mode exactly."""
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
    return results
