"""Pixels at the edge of the library: every conversion between pixel ranges, and every image
file read and written.

Ranges (one image, NHWC; batches add a leading axis):

================  ========  ==========================  =====================================
name              dtype     values                      where
================  ========  ==========================  =====================================
uint8             uint8     0..255                      files, data sources, the apps' inputs
``discrete``      int32     0..255                      discretized likelihoods (logistic)
``unit``          float32   x / 255 in [0, 1]           display, restoration, means, samples
``dequantized``   float32   (x + u) / 256 in [0, 1)     continuous likelihoods in training
``binary``        float32   {0, 1}                      Bernoulli (static or dynamic)
``real``          float32   any reals                   Gaussian on non-image data
================  ========  ==========================  =====================================

uint8 -> what a likelihood reads, as pure JAX functions usable inside ``jit`` (``prepare``
dispatches on the name; those that draw take a key, used once):

===================  ========================  =====================================
``prepare`` name     function                  values
===================  ========================  =====================================
``discrete``         ``to_discrete``           int32 0..255
``unit``             ``to_unit_interval``      float32 x / 255 in [0, 1]
``dequantized``      ``dequantize``            float32 (x + u) / 256 in [0, 1)
``static_binary``    ``static_binarize``       float32 {0, 1}: x >= threshold
``dynamic_binary``   ``dynamic_binarize``      float32 {0, 1} ~ Bernoulli(x / 255)
===================  ========================  =====================================

Files. Modes read exactly (``read_exact``), as uint8 planes ``(H, W, n)`` with the mode to write them
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

import os
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# x / 255 for every byte, each the float32 nearest the true quotient: XLA compiles ``x / 255``
# into ``x * (1 / 255)``, which is off by an ulp for half the values.
UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)
# Dequantization noise has 16 fractional bits: then x + u (8 integer bits + 16) is exact in
# float32's 24-bit significand, so floor(256 * y) == x holds bit for bit and y < 1 always; a
# float32 uniform u in [0, 1) could round 255 + u up to 256.
_NOISE_BITS = 16

# ---------------------------------------------------------------- uint8 -> a likelihood's input (JAX)


def _check_uint8(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.dtype != jnp.uint8:
        raise ValueError(f"x: expected uint8 pixels 0..255, got dtype {x.dtype}")
    return x


def to_discrete(x) -> jax.Array:
    """The 8-bit integers as int32 0..255, for discrete likelihoods."""
    return _check_uint8(x).astype(jnp.int32)


def to_unit_interval(x) -> jax.Array:
    """``x / 255`` as float32 in [0, 1], correctly rounded."""
    return jnp.asarray(UNIT_LEVELS)[_check_uint8(x)]


def dequantize(x, key) -> jax.Array:
    """Uniform dequantization ``(x + u) / 256``, ``u ~ U[0, 1)``: float32 in [0, 1).

    A continuous density on these values lower-bounds the discrete likelihood of ``x``
    (Theis et al. 2016); add ``D * ln 256`` to ``-log p`` when converting to bits/dim.
    ``u`` lies on a grid of ``2**-16`` (see ``_NOISE_BITS``), a negligible coarsening.
    """
    x = _check_uint8(x)
    noise = jax.random.bits(key, x.shape, jnp.uint16).astype(jnp.float32) * 2.0**-_NOISE_BITS
    return (x.astype(jnp.float32) + noise) / 256.0


def static_binarize(x, threshold: int = 128) -> jax.Array:
    """float32 ``1.0`` where ``x >= threshold``, else ``0.0`` (the same bits every epoch)."""
    return (_check_uint8(x) >= threshold).astype(jnp.float32)


def dynamic_binarize(x, key) -> jax.Array:
    """float32 draws from ``Bernoulli(x / 255)``, fresh per key (Salakhutdinov & Murray 2008)."""
    return jax.random.bernoulli(key, to_unit_interval(x)).astype(jnp.float32)


_KEYLESS = {"discrete": to_discrete, "unit": to_unit_interval, "static_binary": static_binarize}
_KEYED = {"dequantized": dequantize, "dynamic_binary": dynamic_binarize}
LIKELIHOOD_INPUTS = tuple(sorted({**_KEYLESS, **_KEYED}))


def prepare(x, likelihood_input: str, key=None) -> jax.Array:
    """uint8 ``x`` transformed for a likelihood; ``likelihood_input`` is one of ``LIKELIHOOD_INPUTS``.

    ``key`` is needed (and used once) by ``dequantized`` and ``dynamic_binary``; the others ignore
    it. Under ``jit`` pass ``likelihood_input`` as a static argument.
    """
    if likelihood_input in _KEYLESS:
        return _KEYLESS[likelihood_input](x)
    if likelihood_input in _KEYED:
        if key is None:
            raise ValueError(f"key: likelihood_input={likelihood_input!r} draws random numbers and needs a key")
        return _KEYED[likelihood_input](x, key)
    raise ValueError(f"likelihood_input: expected one of {LIKELIHOOD_INPUTS}, got {likelihood_input!r}")


# ---------------------------------------------------------------- [0, 1] <-> uint8 <-> a likelihood's values


def to_unit(images_uint8) -> np.ndarray:
    """uint8 -> float32 ``x / 255`` (NumPy; the same values as ``to_unit_interval``)."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 pixels, got dtype {images.dtype}")
    return UNIT_LEVELS[images]


def to_uint8(images01) -> np.ndarray:
    """[0, 1] floats -> uint8 by ``round(255 x)`` (clipped); exact inverse of ``to_unit``."""
    return np.clip(np.round(np.asarray(images01, np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_model_input(images01, input_kind):
    """[0, 1] floats -> what a likelihood of ``input_kind`` reads (JAX, jit-safe): ``discrete``
    ``round(255 x)`` as int32; ``unit`` and ``real`` x clipped to [0, 1]; ``binary`` x >= 1/2."""
    x = jnp.clip(jnp.asarray(images01, jnp.float32), 0.0, 1.0)
    if input_kind == "discrete":
        return jnp.round(255.0 * x).astype(jnp.int32)
    if input_kind in ("unit", "real"):
        return x
    if input_kind == "binary":
        return (x >= 0.5).astype(jnp.float32)
    raise ValueError(f"input_kind: expected 'discrete', 'unit', 'real' or 'binary', got {input_kind!r}")


def from_model_values(values, input_kind):
    """Values in a likelihood's input kind (e.g. samples) -> [0, 1] float32."""
    values = jnp.asarray(values, jnp.float32)
    return values / 255.0 if input_kind == "discrete" else jnp.clip(values, 0.0, 1.0)


def uint8_to_model_input(images_uint8, input_kind):
    """uint8 pixels -> a likelihood's input kind, exactly (discrete pixels stay the integers)."""
    return to_model_input(to_unit(images_uint8), input_kind)


# ---------------------------------------------------------------- files

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
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None
    # Pillow reads the header eagerly and the pixels lazily: decode them (and count the frames,
    # which seeks through an animation) here, so a file cut short or damaged is named as such
    # rather than surfacing as a bare OSError wherever the pixels are first touched.
    try:
        image.load()
        getattr(image, "n_frames", 1)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        image.close()
        raise ValueError(f"{path}: the image data is damaged or cut short ({error})") from None
    return image


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


def check_writable(path, *, force: bool = False, make_parents: bool = False) -> Path:
    """``path`` as a ``Path`` if a file may be written there: not a directory, not an existing
    file unless ``force``, in a directory this process can write into. ``make_parents``: the
    directory may be missing (the writer will create it), if the nearest existing one above it
    is a writable directory. Call it before any work whose result would be lost."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a file path")
    if path.exists():
        if not force:
            raise FileExistsError(f"{path} already exists; not overwriting it (force=True replaces it)")
        if not os.access(path, os.W_OK):
            raise PermissionError(f"cannot replace {path}: the file is not writable")
    if not make_parents and not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    directory = path.parent
    while not directory.exists() and directory != directory.parent:  # a path through a file stops at the file
        directory = directory.parent
    if not directory.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {directory} is a file, not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: directory {directory} is not writable")
    return path


def check_outputs(paths, *, force: bool = False, make_parents: bool = False) -> list[Path]:
    """``check_writable`` on every file a command will write, before it does any work: either all
    of them may be written, or nothing is started."""
    return [check_writable(path, force=force, make_parents=make_parents) for path in paths]


def check_exact_output(path, *, force: bool = False) -> Path:
    """``check_writable`` for an image ``write_exact`` will write: also a ``.png`` path, the one
    format here that keeps every exact mode's pixels (JPEG would change them, for one)."""
    path = check_writable(path, force=force)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: exact images are written as PNG (keeps every pixel); expected a .png path")
    return path


def write_exact(path, planes: np.ndarray, mode: str, *, force: bool = False) -> Path:
    """Write ``planes`` in ``mode`` as a PNG (lossless), refusing to replace an existing file
    unless ``force``."""
    path = check_exact_output(path, force=force)
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


def load_image(path, channels: int) -> np.ndarray:
    """A whole image file as uint8 ``(H, W, channels)`` (1 grey, 3 colour) for the apps: 16-bit
    scaled to 8 bits, alpha dropped."""
    return read_8bit(path, channels)[0]


def save_png(path, picture, scale: int = 1) -> Path:
    """Write a uint8 ``(H, W, C)`` picture as a PNG (each pixel a ``scale`` x ``scale`` block);
    creates the directory. For results the library makes (grids), which it may replace."""
    from PIL import Image

    picture = np.asarray(picture, np.uint8)
    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return Path(path)
