"""Image files at the edge of the library: exact reads for lossless coding, 8-bit reads for
training and the apps, and writes that never replace a file unasked.

Modes read exactly (``read_exact``), as uint8 planes ``(H, W, n)`` with the mode to write them
back in:

========  ===  ============================================
mode       n   planes
========  ===  ============================================
``L``      1   grey
``LA``     2   grey, alpha
``RGB``    3   red, green, blue
``RGBA``   4   red, green, blue, alpha
``I;16``   2   16-bit grey as its high byte, then its low byte
========  ===  ============================================

Everything else (palette, bilevel, CMYK, 32-bit integer or float, 16-bit colour, animations)
is refused with the reason, before anything is written: Pillow cannot give those pixels back
exactly in their own mode, or it reads them already reduced (a 48-bit PNG opens as 8-bit RGB).

``read_8bit`` is for learning from images rather than storing them: 16-bit values are scaled to
8 bits (v / 257, rounded), alpha is dropped (the caller is told), palettes are expanded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

EXACT_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2}
_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageModeError(ValueError):
    """An image whose pixels cannot be read (or written) exactly in their own mode."""


def _open(path):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None


def png_bit_depth(path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for a file that is not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    depth, colour_type = struct.unpack(">BB", head[24:26])
    return depth, colour_type


def read_exact(path) -> tuple[np.ndarray, str]:
    """``(planes, mode)``: the file's pixels exactly, uint8 ``(H, W, n)``, and their mode.

    Raises ``ImageModeError`` for a mode this cannot reproduce exactly (see the module docstring).
    """
    with _open(path) as image:
        mode = image.mode
        if getattr(image, "n_frames", 1) > 1:
            raise ImageModeError(f"{path}: an animation of {image.n_frames} frames; only still images are coded")
        depth = png_bit_depth(path)
        if depth is not None and depth[0] == 16 and mode not in _SIXTEEN_BIT_GREY:
            raise ImageModeError(
                f"{path}: a PNG of 16 bits per colour channel (colour type {depth[1]}); Pillow reads it "
                f"reduced to 8 bits, so it cannot be coded exactly (store it as 16-bit grey planes or 8-bit)"
            )
        if mode in _SIXTEEN_BIT_GREY:
            values = np.asarray(image).astype(np.uint16)
            return np.stack([values >> 8, values & 0xFF], axis=-1).astype(np.uint8), "I;16"
        if mode not in EXACT_MODES:
            raise ImageModeError(
                f"{path}: image mode {mode!r} cannot be coded exactly; supported modes are "
                f"{', '.join(EXACT_MODES)} (convert palette, bilevel or CMYK images to RGB or L first)"
            )
        pixels = np.asarray(image, np.uint8)
    return (pixels[..., None] if pixels.ndim == 2 else pixels), mode


def to_pil(planes: np.ndarray, mode: str):
    """The Pillow image of ``planes`` (uint8 ``(H, W, n)``) in ``mode``; inverse of ``read_exact``."""
    from PIL import Image

    planes = np.asarray(planes)
    if mode not in EXACT_MODES:
        raise ImageModeError(f"mode: expected one of {', '.join(EXACT_MODES)}, got {mode!r}")
    if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[-1] != EXACT_MODES[mode]:
        raise ValueError(
            f"planes: expected uint8 (H, W, {EXACT_MODES[mode]}) for mode {mode}, got {planes.dtype} {planes.shape}"
        )
    if mode == "I;16":
        values = (planes[..., 0].astype(np.uint16) << 8) | planes[..., 1]
        return Image.fromarray(values)  # uint16 -> mode I;16
    return Image.fromarray(planes[..., 0] if mode == "L" else planes, mode)


def check_writable(path, *, force: bool = False) -> Path:
    """``path`` as a ``Path`` if a file may be written there: not a directory, and not an existing
    file unless ``force``. Call it before any work whose result would be lost."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a file path")
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; not overwriting it (force=True replaces it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    return path


def write_exact(path, planes: np.ndarray, mode: str, *, force: bool = False) -> Path:
    """Write ``planes`` in ``mode`` as a PNG (lossless), refusing to replace an existing file
    unless ``force``."""
    path = check_writable(path, force=force)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: exact images are written as PNG; expected a .png path")
    to_pil(planes, mode).save(path, format="PNG")
    return path


def read_8bit(path, channels: int | None) -> tuple[np.ndarray, bool]:
    """``(pixels, dropped_alpha)``: a file as uint8 ``(H, W, C)`` for learning, C = ``channels``
    (1 grey, 3 colour; None: grey stays grey, everything else becomes colour), and whether an
    alpha channel was dropped. 16-bit grey is scaled to 8 bits, not clipped."""
    with _open(path) as image:
        mode = image.mode
        has_alpha = mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in image.info)
        if mode in _SIXTEEN_BIT_GREY or mode == "I":
            values = np.asarray(image).astype(np.float64)
            grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
            from PIL import Image

            image = Image.fromarray(grey, "L")
        grey_source = image.mode in ("L", "LA", "1")
        want_grey = channels == 1 or (channels is None and grey_source)
        pixels = np.asarray(image.convert("L" if want_grey else "RGB"), np.uint8)
    return (pixels[..., None] if pixels.ndim == 2 else pixels), has_alpha
