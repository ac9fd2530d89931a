"""Lossy image files from a rate-distortion codec (``vae_jax.rate_distortion``): quantized latents,
entropy coded with ``constriction``'s ANS coder under integer-exact tables.

What a file holds. The image is padded by edge replication to a multiple of 64 pixels a side
(any size codes; the decoder crops back), greyscale copied into the three channels. The encoder
rounds the hyper-latents, z^ = round(z), and the latents relative to the predicted mean,
q = round(y - mu) with (mu, sigma) = h_s(z^); the decoder rebuilds y^ = q + mu and x^ = g_s(y^).

The tables (``coding_tables``), computed once per model in float64 NumPy, so that they do not
depend on a device's float32 kernels:
- the hyper-latents of channel c under p_c(k) = c_c(k + 1/2) - c_c(k - 1/2) on k in [-K_c, K_c],
  K_c the smallest range outside which the density leaves less than ``TAIL_MASS`` on each side;
- the latents under the discretized Gaussian of one of ``SCALE_LEVELS`` scales (CompressAI's
  ``scale_table``: log-spaced from 0.11 to 256), each value's sigma rounded up to the next level,
  p_s(q) = Phi((q + 1/2) / s) - Phi((q - 1/2) / s) on q in [-L_s, L_s], L_s = ceil(TAIL_SIGMAS s)
  (at least ``MIN_HALF_RANGE``).
The edge bins of every table hold their tails, so a value beyond the range is coded as the edge
value, and the encoder's reconstruction is made from the clipped value: the file decodes to it.

Symbols are coded grouped by table, hyper-latent channel by channel, then latents level by level,
each group in one array call of constriction. The decoder needs (mu, sigma) bit for bit as the
encoder computed them; on one machine the same jitted functions give them, and a checksum of the
encoder's reconstruction in the header makes any disagreement elsewhere an error, never a wrong
image.

Layout: ``MAGIC``, version, mode (0 greyscale, 1 RGB), height, width, the model's hash (16 bytes),
the codec's name (16 bytes, ASCII), the number of 32-bit ANS words, the reconstruction's checksum
(8 bytes), the words, and a CRC-32 of everything before it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import entropy_models, rate_distortion

MAGIC = b"VAELOSSY"
# Version 2: the transposed convolutions run as sub-pixel convolutions, which round float32 apart
# from version 1's dilated ones; a version-1 file is refused by name rather than by its checksum.
VERSION = 2
_HEADER = struct.Struct("<8sBBII16s16sI8s")
_CRC = struct.Struct("<I")
MODES = {"L": 0, "RGB": 1}
SCALE_LEVELS = 64
SCALE_MAX = 256.0
TAIL_SIGMAS = 8.0
MIN_HALF_RANGE = 8
TAIL_MASS = 1e-9
HYPER_SEARCH = 512  # hyper-latent ranges are searched on [-512, 512]
NAME_BYTES = 16


class LossyCodecError(ValueError):
    """An image the codec cannot code, or bytes that are no intact file of this codec."""


def scale_table() -> np.ndarray:
    """The ``SCALE_LEVELS`` scales the latents' tables are made for, log-spaced on [0.11, 256]."""
    return np.exp(np.linspace(math.log(entropy_models.SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def _normal_cdf(x):
    return 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(-np.asarray(x, np.float64) / math.sqrt(2.0))


def _masses_from_cdf(cdf_between):
    """Bin masses from the cumulative at the n - 1 interior bin edges, tails folded into the edge bins."""
    cdf = np.concatenate([np.zeros(cdf_between.shape[:-1] + (1,)), cdf_between, np.ones(cdf_between.shape[:-1] + (1,))], -1)
    return np.maximum(np.diff(cdf, axis=-1), 0.0)


def _normalized(masses):
    return masses / masses.sum()


def gaussian_table(scale: float) -> np.ndarray:
    """p_s(q) on q in [-L_s, L_s] (float64), edge bins with their tails."""
    half = max(math.ceil(TAIL_SIGMAS * scale), MIN_HALF_RANGE)
    edges = np.arange(-half, half) + 0.5
    return _normalized(_masses_from_cdf(_normal_cdf(edges / scale)))


def hyper_tables(density_params) -> list[np.ndarray]:
    """Each hyper-latent channel's p_c(k) on [-K_c, K_c] (float64), edge bins with their tails."""
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), density_params)
    channels = params["matrices"][0].shape[0]
    edges = np.arange(-HYPER_SEARCH, HYPER_SEARCH + 1, dtype=np.float64) + 0.5
    cdf = entropy_models.factorized_cdf(params, np.broadcast_to(edges, (channels, edges.size)), xp=np)
    tables = []
    for c in range(channels):
        half = _hyper_half_range(cdf[c])
        inner = slice(HYPER_SEARCH - half, HYPER_SEARCH + half)  # the edges -half + 1/2 .. half - 1/2
        tables.append(_normalized(_masses_from_cdf(cdf[c, inner])))
    return tables


def _hyper_half_range(cdf_at_edges) -> int:
    """The smallest K >= MIN_HALF_RANGE whose tails below -K - 1/2 and above K + 1/2 hold less than
    TAIL_MASS each; ``cdf_at_edges[j]`` is the cumulative at -HYPER_SEARCH + j + 1/2."""
    for half in range(MIN_HALF_RANGE, HYPER_SEARCH):
        if cdf_at_edges[HYPER_SEARCH - half - 1] < TAIL_MASS and 1.0 - cdf_at_edges[HYPER_SEARCH + half] < TAIL_MASS:
            return half
    return HYPER_SEARCH


@dataclasses.dataclass(frozen=True, eq=False)
class LossyCodec:
    """A trained rate-distortion model ready to code: its tables and constriction models built once."""

    name: str
    model: rate_distortion.HyperpriorCodec
    params: object
    model_hash: bytes
    latent_tables: tuple
    hyper_tables: tuple

    @property
    def latent_half_ranges(self) -> np.ndarray:
        return np.array([(len(t) - 1) // 2 for t in self.latent_tables])

    @property
    def hyper_half_ranges(self) -> np.ndarray:
        return np.array([(len(t) - 1) // 2 for t in self.hyper_tables])

    @functools.cached_property
    def _entropy_models(self):
        import constriction

        def categorical(table):
            return constriction.stream.model.Categorical(table, perfect=False)

        return [categorical(t) for t in self.hyper_tables], [categorical(t) for t in self.latent_tables]


def codec_hash(model, params) -> bytes:
    """The first 16 bytes of SHA-256 of the model's description and parameters."""
    from vae_jax import checkpoints

    return checkpoints.digest_tree(hashlib.sha256(repr(model).encode()), params).digest()[:NAME_BYTES]


def make_codec(model, params, name: str) -> LossyCodec:
    """The codec of a trained ``(model, params)``: tables from the parameters, deterministically."""
    if not isinstance(model, rate_distortion.HyperpriorCodec):
        raise LossyCodecError(f"model: a lossy codec needs a rate-distortion model (model=hyperprior), got {type(model).__name__}")
    encoded = name.encode("ascii", errors="replace")
    if len(encoded) > NAME_BYTES:
        raise LossyCodecError(f"name: at most {NAME_BYTES} ASCII characters, got {name!r}")
    params = jax.tree_util.tree_map(np.asarray, params)
    latent = tuple(gaussian_table(s) for s in scale_table())
    return LossyCodec(name, model, params, codec_hash(model, params), latent, tuple(hyper_tables(params["hyper_density"])))


def shipped_qualities() -> list[str]:
    """The shipped lossy codecs' names (``pretrained:NAME``), lowest rate first."""
    from vae_jax import trained

    return [name for name in trained.available() if name.startswith("photos-rd-")]


def load_codec(spec: str) -> LossyCodec:
    """The codec a shipped name (``photos-rd-q3`` or ``pretrained:photos-rd-q3``) or a run directory names."""
    from vae_jax import trained

    spec = str(spec)
    loaded = trained.load(spec if ("/" in spec or spec.startswith(trained.PRETRAINED_PREFIX)) else trained.PRETRAINED_PREFIX + spec)
    return make_codec(loaded.model, loaded.params, loaded.name[-NAME_BYTES:])


# ---------------------------------------------------------------- the networks' side


@functools.lru_cache(maxsize=8)
def _programs(model):
    """The jitted steps both sides share, so that encoder and decoder compute (mu, sigma) and x^ alike."""
    table = jnp.asarray(scale_table()[:-1], jnp.float32)

    def analyse(params, x):
        y = model.analysis(params, x)
        return y, model.hyper_analysis(params, y)

    def hyper(params, z_hat):
        mean, scale = model.hyper_synthesis(params, z_hat)
        level = jnp.sum(jnp.maximum(scale, entropy_models.SCALE_MIN)[..., None] > table, axis=-1)
        return mean, level.astype(jnp.int32)

    def synthesize(params, q, mean):
        x = model.synthesis(params, q + mean)
        return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)

    return jax.jit(analyse), jax.jit(hyper), jax.jit(synthesize)


def _checked_pixels(pixels) -> tuple[np.ndarray, str]:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise LossyCodecError(f"pixels: the lossy codec codes 8-bit images (uint8), got {pixels.dtype} (16-bit and float images are not coded)")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):
        raise LossyCodecError(f"pixels: the lossy codec codes greyscale and RGB, not alpha; got {pixels.shape[-1]} channels")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)) or min(pixels.shape[:2]) < 1:
        raise LossyCodecError(f"pixels: expected (H, W) or (H, W, 3) uint8, got shape {pixels.shape}")
    return pixels, "L" if pixels.ndim == 2 else "RGB"


def padded_shape(image_hw) -> tuple[int, int]:
    multiple = rate_distortion.PAD_MULTIPLE
    return tuple(-(-side // multiple) * multiple for side in image_hw)


def _model_input(pixels):
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels
    height, width = padded_shape(rgb.shape[:2])
    rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
    return (rgb.astype(np.float32) / 255.0)[None]


def _as_mode(reconstruction, image_hw, mode):
    height, width = image_hw
    rgb = np.asarray(reconstruction)[0, :height, :width]
    if mode == "RGB":
        return rgb
    return np.round(rgb.astype(np.float64).mean(axis=-1)).astype(np.uint8)


def checksum(pixels) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).digest()[:8]


# ---------------------------------------------------------------- coding


def _latent_groups(levels):
    """The flat positions of each level's latents, in raster order."""
    flat = levels.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=SCALE_LEVELS)
    return np.split(order, np.cumsum(counts)[:-1])


def encode_latents(codec: LossyCodec, pixels):
    """(z^, q, mean): the rounded, range-clipped hyper-latents and latents of ``pixels`` (uint8, as
    ``compress`` takes them) and the latents' predicted mean."""
    analyse, hyper, _ = _programs(codec.model)
    y, z = (np.asarray(a) for a in analyse(codec.params, _model_input(pixels)))
    bound = codec.hyper_half_ranges.astype(np.float32)
    z_hat = np.clip(np.round(z), -bound, bound)
    mean, levels = (np.asarray(a) for a in hyper(codec.params, z_hat))
    half = codec.latent_half_ranges.astype(np.float32)[levels]
    q = np.clip(np.round(y - mean), -half, half)
    return z_hat, q, mean, levels


def compress(codec: LossyCodec, pixels) -> tuple[bytes, np.ndarray]:
    """``(file bytes, the reconstruction the file decodes to)`` of a uint8 greyscale or RGB image."""
    import constriction

    pixels, mode = _checked_pixels(pixels)
    z_hat, q, mean, levels = encode_latents(codec, pixels)
    _, _, synthesize = _programs(codec.model)
    reconstruction = _as_mode(synthesize(codec.params, q, mean), pixels.shape[:2], mode)
    hyper_models, latent_models = codec._entropy_models
    ans = constriction.stream.stack.AnsCoder()
    flat_q = q.reshape(-1)
    half = codec.latent_half_ranges
    groups = _latent_groups(levels)
    for level in reversed(range(SCALE_LEVELS)):
        if groups[level].size:
            symbols = (flat_q[groups[level]] + half[level]).astype(np.int32)
            ans.encode_reverse(symbols, latent_models[level])
    hyper_half = codec.hyper_half_ranges
    for c in reversed(range(z_hat.shape[-1])):
        ans.encode_reverse((z_hat[..., c].reshape(-1) + hyper_half[c]).astype(np.int32), hyper_models[c])
    words = ans.get_compressed()
    header = _HEADER.pack(
        MAGIC, VERSION, MODES[mode], pixels.shape[0], pixels.shape[1], codec.model_hash,
        codec.name.encode("ascii").ljust(NAME_BYTES, b"\0"), len(words), checksum(reconstruction),
    )  # fmt: skip
    body = header + words.astype("<u4").tobytes()
    return body + _CRC.pack(zlib.crc32(body)), reconstruction


def is_lossy_file(blob) -> bool:
    return bytes(blob[: len(MAGIC)]) == MAGIC


def read_header(blob) -> dict:
    """The header's fields, after checking magic, version, length and CRC (``LossyCodecError`` if not)."""
    blob = bytes(blob)
    if not is_lossy_file(blob):
        raise LossyCodecError(f"not a vae-jax lossy file: it starts {blob[:8]!r}, expected {MAGIC!r}")
    if len(blob) < _HEADER.size + _CRC.size:
        raise LossyCodecError(f"truncated file: {len(blob)} bytes, shorter than the header ({_HEADER.size + _CRC.size})")
    _, version, mode, height, width, model_hash, name, num_words, image_checksum = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise LossyCodecError(f"unsupported lossy file version {version}: this reader reads version {VERSION}")
    (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(blob[: -_CRC.size]) != crc:
        raise LossyCodecError("corrupted or truncated file: CRC-32 mismatch")
    if _HEADER.size + 4 * num_words + _CRC.size != len(blob):
        raise LossyCodecError(f"corrupted file: {num_words} ANS words do not fill its {len(blob)} bytes")
    modes = {v: k for k, v in MODES.items()}
    if mode not in modes or min(height, width) < 1:
        raise LossyCodecError(f"corrupted file: mode {mode}, size {height}x{width}")
    return {
        "mode": modes[mode], "height": height, "width": width, "model_hash": model_hash,
        "name": name.rstrip(b"\0").decode("ascii", errors="replace"), "num_words": num_words,
        "checksum": image_checksum,
    }  # fmt: skip


def decompress(blob, codec: LossyCodec | None = None) -> np.ndarray:
    """The uint8 image a file holds; ``codec`` None loads the shipped codec the header names."""
    import constriction

    fields = read_header(blob)
    if codec is None:
        if fields["name"] not in shipped_qualities():
            raise LossyCodecError(
                f"the file was coded by {fields['name']!r}, which is not a shipped codec ({shipped_qualities()}): "
                f"give the model it was coded with"
            )
        codec = load_codec(fields["name"])
    if fields["model_hash"] != codec.model_hash:
        raise LossyCodecError(
            f"the file was coded by another model ({fields['name']!r}, hash {fields['model_hash'].hex()}); "
            f"this one is {codec.name!r} ({codec.model_hash.hex()})"
        )
    words = np.frombuffer(bytes(blob), "<u4", fields["num_words"], _HEADER.size).astype(np.uint32)
    height, width = padded_shape((fields["height"], fields["width"]))
    model = codec.model
    z_shape = (1, height // rate_distortion.PAD_MULTIPLE, width // rate_distortion.PAD_MULTIPLE, model.width)
    y_shape = (1, height // rate_distortion.STRIDE, width // rate_distortion.STRIDE, model.latent_channels)
    hyper_models, latent_models = codec._entropy_models
    _, hyper, synthesize = _programs(model)
    try:
        ans = constriction.stream.stack.AnsCoder(words)
        z_hat = np.empty(z_shape, np.float32)
        count = math.prod(z_shape[:-1])
        for c in range(model.width):
            z_hat[..., c] = (ans.decode(hyper_models[c], count) - codec.hyper_half_ranges[c]).reshape(z_shape[:-1])
        mean, levels = (np.asarray(a) for a in hyper(codec.params, z_hat))
        if levels.shape != y_shape:
            raise LossyCodecError(f"the model's latents have shape {levels.shape}, not {y_shape}")
        flat_q = np.empty(math.prod(y_shape), np.float32)
        for level, positions in enumerate(_latent_groups(levels)):
            if positions.size:
                flat_q[positions] = ans.decode(latent_models[level], positions.size) - codec.latent_half_ranges[level]
        left_over = not ans.is_empty()
    except LossyCodecError:
        raise
    except Exception as error:  # noqa: BLE001 -- constriction raises several kinds on bytes no encoder wrote
        raise LossyCodecError(f"corrupt or foreign file: the entropy decoder failed ({error})") from None
    if left_over:
        raise LossyCodecError("corrupt or foreign file: words are left over after the last latent")
    image = _as_mode(synthesize(codec.params, flat_q.reshape(y_shape), mean), (fields["height"], fields["width"]), fields["mode"])
    if checksum(image) != fields["checksum"]:
        raise LossyCodecError(
            "the decoded image differs from the encoder's reconstruction (checksum mismatch): the file was made on "
            "a machine whose float32 networks round differently, or it is corrupt"
        )
    return image


def estimated_bits(codec: LossyCodec, pixels) -> float:
    """The model's rate for ``pixels`` with rounded latents, -log2 p(y^ | z^) - log2 p(z^), in bits
    (``rate_distortion.quantized_terms``): what the file's payload should be close to."""
    pixels, _ = _checked_pixels(pixels)
    terms = rate_distortion.jitted_quantized_terms(codec.model)(codec.params, _model_input(pixels))
    return float(terms.y_bits[0] + terms.z_bits[0])


def psnr(reference, decoded) -> float:
    """10 log10(255^2 / MSE) over every sub-pixel of two uint8 images, in dB (inf if equal)."""
    error = np.mean(np.square(np.asarray(reference, np.float64) - np.asarray(decoded, np.float64)))
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))


def payload_bits(blob) -> int:
    return 32 * read_header(blob)["num_words"]
