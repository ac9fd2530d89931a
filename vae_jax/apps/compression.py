"""Lossless compression of 8-bit images with bits-back ANS (BB-ANS).

Bits-back coding (Townsend, Bird & Barber 2019, "Practical lossless compression with latent
variables using bits back coding") turns a VAE into a lossless code whose expected length
approaches the negative ELBO. With an ANS stack (last in, first out), one tile ``x`` is coded as

    encode:  z ~ Q(z|x)  DECODED from the stack    (takes  -log2 Q(z|x) bits off: bits back)
             x           encoded under P(x|z)       (puts   -log2 P(x|z) bits on)
             z           encoded under P(z)         (puts   -log2 P(z)   bits on)
    decode:  z <- P(z),  x <- P(x|z),  then z is encoded back under Q(z|x), restoring the
             bits the encoder took off,

so a tile costs ``-log2 P(x|z) - log2 P(z) + log2 Q(z|x)`` bits, whose mean under ``Q`` is the
negative ELBO of the discretized model. Tiles are coded one after another on one stack, so
each tile's bits back come from the tiles before it; the first one takes them from
pseudo-random "initial bits" (below).

Discretization (what P and Q are, exactly):

- pixels: each sub-pixel has a categorical over its 256 values with probabilities
  ``exp(log p(v | z))``, v = 0..255, from the model's own likelihood (discretized logistic or
  its mixture), quantized to fixed point by ``constriction.stream.model.Categorical(perfect=False)``;
- latents: each latent dimension is put on a grid of fixed bin width ``w = 2**-bin_log2`` over
  ``[-max_abs, max_abs]``, z = w * i for integer i. Q(i|x) is the posterior N(mean, std^2) and
  P(i) each prior component N(mu_k, sigma_k^2), integrated over the bins of width w, clipped to
  the range and renormalized: ``constriction``'s ``QuantizedGaussian`` on the bin index i with
  mean / w and std / w. BB-ANS buckets latents into equal-mass bins of the prior instead; for a
  fixed width, P(i) ~ p(wi) w and Q(i) ~ q(wi) w, so the net latent cost
  ``log Q - log P`` still tends to log q(z|x) - log p(z) (the ELBO's KL term) once w is well
  below the posterior's standard deviation, and it serves any prior that is a mixture of
  diagonal Gaussians;
- mixture priors (``MixtureOfGaussians``, ``VampPrior``): z is coded with bits back over the
  component k as well (the nested scheme of BB-ANS for hierarchical latents): decode k from
  P(k | z) proportional to pi_k N(wi; mu_k, sigma_k^2), encode z under component k, encode k under pi.

Bit-exactness: every probability the decoder uses is computed by the same jitted function
on the same inputs as the encoder's (one tile at a time, batch size 1, float32), which XLA
evaluates identically on the same machine and software. A different backend or library
version may round differently: decode where you encoded (the header's model hash catches a
different model, not a different floating-point environment).

Initial bits: before the first tile the stack holds ``num_initial_words`` pseudo-random
32-bit words derived from the header's seed (SHA-256 in counter mode), enough for the first
tile's latents at constriction's 24-bit probability precision. The words the coder never
touched are a prefix of the final stack; that prefix is dropped from the file (the decoder
regenerates it), so only the consumed initial words cost space: that one-off overhead is
``initial_bits_overhead`` in the report. After decoding, the stack must be back to exactly
the initial words: a final integrity check.

File format (little-endian), ``_HEADER`` then the ANS words then a CRC-32 of all before it:
magic ``b"VAEBBANS"``, version (u8), model hash (32 bytes, ``model_hash``), image height, width
(u32), the image's channels n (u16), its mode (4 ASCII bytes, e.g. ``RGBA``, ``I;16``), tile
height, width (u16), seed (u64), number of initial words, number of stripped initial words
(u32), bin_log2 (i8), max_abs (u16), number of ANS words (u32).

Images of any channel count are coded in planes of the model's channels (``split_planes``), so
greyscale, alpha and the two bytes of 16-bit grey are coded exactly and come back in their own
mode (``vae_jax.images`` reads and writes the files).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import time
import zlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoints, distributions
from vae_jax.apps import tiling

MAGIC = b"VAEBBANS"
VERSION = 3  # 2: the edge padding of border tiles is not coded; 3: any channel count, and the mode
_HEADER = struct.Struct("<8sB32sIIH4sHHQIIbHI")
_CRC = struct.Struct("<I")
DEFAULT_BIN_LOG2 = 6  # latent bin width 1/64
DEFAULT_MAX_ABS = 16  # latents coded on [-16, 16]; beyond it they are clipped to the edge bins
# constriction's default entropy models use 24-bit fixed-point probabilities, so no symbol
# costs more than 24 bits: the bound that sizes the initial bits.
_MAX_BITS_PER_SYMBOL = 24
_MIN_STD_IN_BINS = 1e-6  # QuantizedGaussian needs std > 0; narrower than this is one bin anyway


class CompressionError(ValueError):
    """A file that cannot be decoded: truncated, corrupted, or made by another model."""


# ---------------------------------------------------------------- model identity


def model_hash(model, params) -> bytes:
    """SHA-256 of the model description's ``repr`` and every params leaf (path, dtype, shape, bytes).

    Two models share a hash only if they have the same description and bit-identical params.
    """
    digest = hashlib.sha256(repr(model).encode())
    return checkpoints.digest_tree(digest, params).digest()


def check_codable(model):
    """Raise a clear error unless ``model`` can code 8-bit pixels with this coder."""
    if model.num_groups != 1:
        raise ValueError(
            f"model: this bits-back coder handles models of one latent group; {type(model).__name__} has "
            f"{model.num_groups}, each needing its own nested bits-back step"
        )
    if model.likelihood.input_kind != "discrete":
        raise ValueError(
            f"model.likelihood: lossless coding of 8-bit pixels needs a discrete likelihood "
            f"(DiscretizedLogistic or DiscretizedLogisticMixture), got {type(model.likelihood).__name__}"
        )
    if len(model.data_shape) != 3:
        raise ValueError(f"model.data_shape: expected (H, W, C) images, got {model.data_shape}")


# ---------------------------------------------------------------- probabilities (jitted, one tile)


@partial(jax.jit, static_argnums=(0, 1))
def _posterior_in_bins(model, bin_width, params, tile):
    """Q(z|x) on the bin-index scale: (mean / w, std / w), flattened, for one tile ``(1, H, W, C)``."""
    mean, log_var = model.posterior(params, tile)
    std = jnp.exp(0.5 * jnp.clip(log_var, -60.0, 60.0))
    return jnp.ravel(mean / bin_width), jnp.maximum(jnp.ravel(std / bin_width), _MIN_STD_IN_BINS)


@partial(jax.jit, static_argnums=(0, 1))
def _decoder_output(model, bin_width, params, z_bins):
    """The decoder's output ``(H, W, C, P)`` (or ``(H, W, P)`` for a coupled likelihood) at z = w * z_bins."""
    z = (z_bins.astype(jnp.float32) * bin_width).reshape(1, *model.latent_template.shape)
    return model.decoder_output(params, z)[0]


@partial(jax.jit, static_argnums=0)
def _channel_probabilities(likelihood, out, tile):
    """P(x_c | z, x_<c) as unnormalized probabilities ``(H, W, C, 256)``, every sub-pixel's
    conditional given the tile's earlier channels (channel c reads only channels < c of ``tile``,
    so a decoder passes the channels it has and anything after them)."""
    log_p = likelihood.channel_log_probs(tile.astype(jnp.float32), out)
    return jnp.exp(log_p - jnp.max(log_p, axis=-1, keepdims=True))


@partial(jax.jit, static_argnums=(0, 1))
def _prior_in_bins(model, bin_width, params):
    """P(z)'s components on the bin-index scale: weights (K,), means / w and stds / w, (K, L)."""
    components = model.prior_components(params)
    k = components.means.shape[0]
    means = components.means.reshape(k, -1) / bin_width
    stds = jnp.exp(0.5 * jnp.clip(components.log_vars.reshape(k, -1), -60.0, 60.0)) / bin_width
    return jax.nn.softmax(components.logit_weights), means, jnp.maximum(stds, _MIN_STD_IN_BINS)


@jax.jit
def _component_posterior(weights, means, stds, z_bins):
    """P(k | z) proportional to pi_k prod_d N(z_d; mu_kd, sigma_kd^2), all on the bin-index scale."""
    z = z_bins.astype(jnp.float32)[None]
    log_joint = jnp.log(weights) + jnp.sum(
        distributions.diag_gaussian_log_prob(z, means, 2.0 * jnp.log(stds)), axis=-1
    )
    return jax.nn.softmax(log_joint)


class _Coder:
    """The model-side half of the codec: the entropy models of one (model, params, grid)."""

    def __init__(self, model, params, bin_log2, max_abs):
        import constriction

        self.model, self.params = model, params
        self.bin_width = 2.0**-bin_log2
        self.max_index = int(max_abs) * 2 ** int(bin_log2)
        self.latent_family = constriction.stream.model.QuantizedGaussian(-self.max_index, self.max_index)
        self.categorical = constriction.stream.model.Categorical(perfect=False)
        prior = _prior_in_bins(model, self.bin_width, params)
        self.weights, self.prior_means, self.prior_stds = (np.asarray(a, np.float64) for a in prior)
        self._prior_jax = prior

    def _checked(self, name, *arrays):
        for array in arrays:
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name}: the model produced non-finite values; cannot code with it")
        return arrays

    def posterior(self, tile):
        mean, std = _posterior_in_bins(self.model, self.bin_width, self.params, jnp.asarray(tile)[None])
        return self._checked("posterior", np.asarray(mean, np.float64), np.asarray(std, np.float64))

    def decoder_output(self, z_bins):
        return _decoder_output(self.model, self.bin_width, self.params, jnp.asarray(z_bins))

    def channel_probabilities(self, out, tile):
        """Every sub-pixel's ``(H, W, C, 256)`` conditional given the tile's earlier channels."""
        probs = _channel_probabilities(self.model.likelihood, out, jnp.asarray(tile, jnp.int32))
        return self._checked("likelihood", np.asarray(probs, np.float64))[0]

    def component_posterior(self, z_bins):
        probs = _component_posterior(*self._prior_jax, jnp.asarray(z_bins))
        return self._checked("prior", np.asarray(probs, np.float64)[None])[0]

    # ---- the latent under the prior (with bits back over the mixture component when K > 1)

    def push_latent(self, ans, z_bins):
        if self.weights.shape[0] == 1:
            ans.encode_reverse(z_bins, self.latent_family, self.prior_means[0], self.prior_stds[0])
            return
        k = int(ans.decode(self.categorical, self.component_posterior(z_bins))[0])
        ans.encode_reverse(z_bins, self.latent_family, self.prior_means[k], self.prior_stds[k])
        ans.encode_reverse(np.array([k], np.int32), self.categorical, self.weights[None])

    def pop_latent(self, ans):
        if self.weights.shape[0] == 1:
            return ans.decode(self.latent_family, self.prior_means[0], self.prior_stds[0])
        k = int(ans.decode(self.categorical, self.weights[None])[0])
        z_bins = ans.decode(self.latent_family, self.prior_means[k], self.prior_stds[k])
        ans.encode_reverse(np.array([k], np.int32), self.categorical, self.component_posterior(z_bins))
        return z_bins

    # ---- one tile

    def push_tile(self, ans, tile, valid_hw):
        """Encode one uint8 tile: z <- Q(z|x) (bits back), push x under P(x|z), push z under P(z).

        The channels are pushed last to first, so that a decoder pops the first channel, then the
        second given the first, and so on (a coupled likelihood's R, G | R, B | R, G). Only the
        tile's first ``valid_hw`` rows and columns are image pixels; the rest is edge padding,
        which the decoder rebuilds from them, so it is not coded."""
        mean, std = self.posterior(tile.astype(np.int32))
        z_bins = ans.decode(self.latent_family, mean, std)
        table = self.channel_probabilities(self.decoder_output(z_bins), tile)  # the whole tile is known
        for channel in reversed(range(tile.shape[-1])):
            symbols = np.ascontiguousarray(_valid(tile[..., channel], valid_hw).reshape(-1), dtype=np.int32)
            ans.encode_reverse(symbols, self.categorical, _channel_rows(table, channel, valid_hw))
        self.push_latent(ans, z_bins)

    def pop_tile(self, ans, valid_hw):
        """Decode one tile: z <- P(z), x <- P(x|z) channel by channel, then push z back under Q(z|x)."""
        z_bins = self.pop_latent(ans)
        out = self.decoder_output(z_bins)
        (height, width, channels), (valid_h, valid_w) = self.model.data_shape, valid_hw
        tile = np.zeros((height, width, channels), np.int32)
        for channel in range(channels):  # channel c's conditionals need the channels decoded before it
            table = self.channel_probabilities(out, tile)
            symbols = ans.decode(self.categorical, _channel_rows(table, channel, valid_hw))
            tile[:valid_h, :valid_w, channel] = symbols.reshape(valid_h, valid_w)
        tile = np.pad(tile[:valid_h, :valid_w], ((0, height - valid_h), (0, width - valid_w), (0, 0)), mode="edge")
        mean, std = self.posterior(tile)
        ans.encode_reverse(z_bins, self.latent_family, mean, std)
        return tile.astype(np.uint8)


def _valid(tile, valid_hw):
    return tile[: valid_hw[0], : valid_hw[1]]


def _channel_rows(table, channel, valid_hw):
    """The valid sub-pixels' ``(D, 256)`` rows of one channel, contiguous as constriction reads them."""
    return np.ascontiguousarray(_valid(table[..., channel, :], valid_hw).reshape(-1, 256))


def valid_sizes(grid):
    """Per tile (raster order), the rows and columns of it that are image, not padding."""
    (th, tw), (height, width) = grid.tile_hw, grid.image_hw
    return [
        (min(th, height - row * th), min(tw, width - col * tw))
        for row in range(grid.rows)
        for col in range(grid.cols)
    ]


# ---------------------------------------------------------------- initial bits


def num_initial_words(model):
    """Words that cover the first tile's bits back (every latent symbol and the component index)."""
    latent_size = math.prod(model.latent_template.shape)
    return -(-(latent_size + 1) * _MAX_BITS_PER_SYMBOL // 32) + 2


def initial_words(seed, count):
    """``count`` pseudo-random uint32 words from ``seed`` (SHA-256 in counter mode, platform-free).

    The last word is made odd: constriction reads a stack ending in a zero word as invalid.
    """
    stream = b"".join(
        hashlib.sha256(b"vae-jax bits-back initial bits" + struct.pack("<QI", seed, block)).digest()
        for block in range(-(-count * 4 // 32))
    )
    words = np.frombuffer(stream[: 4 * count], dtype="<u4").astype(np.uint32)
    words[-1] |= 1
    return words


def _common_prefix(a, b):
    n = min(len(a), len(b))
    differ = np.nonzero(a[:n] != b[:n])[0]
    return int(differ[0]) if differ.size else n


# ---------------------------------------------------------------- planes


def default_mode(num_channels: int) -> str:
    """The image mode a plain ``(H, W, n)`` array stands for: L, LA, RGB or RGBA (else none)."""
    return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(num_channels, "")


def split_planes(pixels: np.ndarray, channels: int) -> list[np.ndarray]:
    """An ``(H, W, n)`` image as model-sized planes ``(H, W, channels)``: its channels in groups of
    ``channels``, the last group completed by repeating its last channel (grey or alpha for a
    colour model: (v, v, v)); ``join_planes`` takes the first n channels back."""
    n = pixels.shape[-1]
    planes = []
    for start in range(0, n, channels):
        group = pixels[..., start : start + channels]
        if group.shape[-1] < channels:
            group = np.concatenate([group, np.repeat(group[..., -1:], channels - group.shape[-1], -1)], -1)
        planes.append(group)
    return planes


def join_planes(planes: list[np.ndarray], num_channels: int) -> np.ndarray:
    return np.concatenate(planes, axis=-1)[..., :num_channels]


# ---------------------------------------------------------------- public API


def _as_pixels(pixels):
    image = np.asarray(pixels)
    if image.dtype != np.uint8:
        raise ValueError(f"pixels: expected dtype uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or min(image.shape) < 1 or image.shape[-1] > 65535:
        raise ValueError(f"pixels: expected an (H, W) or (H, W, n) image, got shape {np.shape(pixels)}")
    return image


def _tile_jobs(model, image):
    """Per plane, its tiles and their valid sizes, in coding order."""
    jobs = []
    for plane in split_planes(image, model.data_shape[-1]):
        tiles, grid = tiling.split(plane, model.data_shape[:2], mode="edge")
        jobs.extend(zip(tiles, valid_sizes(grid)))
    return jobs


def compress_image(model, params, pixels, seed=0, *, mode=None, bin_log2=DEFAULT_BIN_LOG2,
                   max_abs=DEFAULT_MAX_ABS, progress=None):  # fmt: skip
    """bytes: a uint8 image ``(H, W)`` or ``(H, W, n)`` (any size, any n) coded losslessly with
    bits-back ANS.

    The image's channels are coded in planes of the model's channels (``split_planes``: RGBA on
    a colour model is RGB, then (A, A, A)); each plane is edge-padded to whole tiles of
    ``model.data_shape`` and its tiles coded in raster order, each tile's latent from the padded
    tile but only its image pixels (the decoder rebuilds the padding). ``mode`` (stored in the
    header, default ``default_mode(n)``) names how to write the pixels back; ``seed`` fixes the
    initial bits; ``progress(n)`` is called after every n tiles.
    """
    check_codable(model)
    import constriction

    image = _as_pixels(pixels)
    mode = default_mode(image.shape[-1]) if mode is None else mode
    if not (isinstance(mode, str) and mode.isascii() and len(mode) <= 4):
        raise ValueError(f"mode: expected an image mode of at most 4 ASCII characters, got {mode!r}")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**64):
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    if not (0 <= bin_log2 <= 12 and 1 <= max_abs <= 64):
        raise ValueError(f"bin_log2={bin_log2}, max_abs={max_abs}: expected 0..12 and 1..64")
    coder = _Coder(model, params, bin_log2, max_abs)
    start = initial_words(int(seed), num_initial_words(model))
    ans = constriction.stream.stack.AnsCoder(start.copy())
    for tile, valid_hw in _tile_jobs(model, image):
        coder.push_tile(ans, tile, valid_hw)
        if progress is not None:
            progress(1)
    words = ans.get_compressed().astype("<u4")
    stripped = _common_prefix(words, start)
    height, width, channels = image.shape
    header = _HEADER.pack(
        MAGIC, VERSION, model_hash(model, params), height, width, channels, mode.encode("ascii"),
        *model.data_shape[:2], int(seed), start.size, stripped, bin_log2, max_abs, words.size - stripped,
    )  # fmt: skip
    body = header + words[stripped:].tobytes()
    return body + _CRC.pack(zlib.crc32(body))


_FIELDS = (
    "magic", "version", "model_hash", "height", "width", "channels", "mode", "tile_height", "tile_width",
    "seed", "num_initial_words", "stripped_words", "bin_log2", "max_abs", "num_words",
)  # fmt: skip


def read_header(blob):
    """The header's fields as a dict, after checking magic, version, length and CRC."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size + _CRC.size:
        raise CompressionError(
            f"truncated file: {len(blob)} bytes, shorter than the {_HEADER.size + 4}-byte header"
        )
    fields = dict(zip(_FIELDS, _HEADER.unpack_from(blob)))
    if fields["magic"] != MAGIC:
        raise CompressionError(f"not a vae-jax bits-back file: magic {fields['magic']!r}, expected {MAGIC!r}")
    if fields["version"] != VERSION:
        raise CompressionError(f"unsupported file version {fields['version']}, this reader knows {VERSION}")
    expected = _HEADER.size + 4 * fields["num_words"] + _CRC.size
    if len(blob) != expected:
        raise CompressionError(f"truncated or padded file: {len(blob)} bytes, the header says {expected}")
    (crc,) = _CRC.unpack_from(blob, len(blob) - _CRC.size)
    if zlib.crc32(blob[: -_CRC.size]) != crc:
        raise CompressionError("corrupted file: CRC-32 mismatch")
    fields["mode"] = fields["mode"].rstrip(b"\0").decode("ascii", errors="replace")
    return fields


def decompress_image(model, params, blob, *, progress=None):
    """The uint8 ``(H, W, n)`` pixels that ``compress_image`` coded into ``blob``, bit for bit
    (``read_header(blob)["mode"]`` says how to write them).

    Raises ``CompressionError`` (a ``ValueError``) for a truncated or corrupted file or one
    made by another model or params.
    """
    check_codable(model)
    import constriction

    fields = read_header(blob)
    if fields["model_hash"] != model_hash(model, params):
        raise CompressionError(
            "this file was made by a different model or params (model hash mismatch); "
            "decode it with the model that compressed it"
        )
    tile_hw, channels = (fields["tile_height"], fields["tile_width"]), model.data_shape[-1]
    if tile_hw != tuple(model.data_shape[:2]):
        raise CompressionError(f"file tiles {tile_hw} do not match the model's {model.data_shape}")
    start = initial_words(fields["seed"], fields["num_initial_words"])
    if fields["stripped_words"] > start.size:
        raise CompressionError("corrupted file: more stripped initial words than initial words")
    stored = np.frombuffer(blob, dtype="<u4", count=fields["num_words"], offset=_HEADER.size)
    words = np.concatenate([start[: fields["stripped_words"]], stored]).astype(np.uint32)
    grid = tiling.tile_grid((fields["height"], fields["width"]), tile_hw)
    num_planes = -(-fields["channels"] // channels)
    coder = _Coder(model, params, fields["bin_log2"], fields["max_abs"])
    tiles = []
    try:
        ans = constriction.stream.stack.AnsCoder(words)
        for valid_hw in (valid_sizes(grid) * num_planes)[::-1]:
            tiles.append(coder.pop_tile(ans, valid_hw))
            if progress is not None:
                progress(1)
        rest = ans.get_compressed()
    except ValueError as error:
        raise CompressionError(f"corrupted file: the ANS stream does not decode ({error})") from error
    if not np.array_equal(rest, start):
        raise CompressionError("corrupted file: decoding did not return the stack to its initial bits")
    tiles = np.stack(tiles[::-1]).reshape(num_planes, grid.rows * grid.cols, *tiles[0].shape)
    planes = [np.asarray(tiling.stitch(plane_tiles, grid)) for plane_tiles in tiles]
    return join_planes(planes, fields["channels"])


def num_tiles(model, shape) -> int:
    """Tiles ``compress_image`` codes for an image of ``shape`` (H, W, n): the progress total."""
    height, width, n = shape
    grid = tiling.tile_grid((height, width), model.data_shape[:2])
    return grid.rows * grid.cols * -(-n // model.data_shape[-1])


# ---------------------------------------------------------------- report


def _codec_bytes(pil_image, format_name, **options):
    buffer = io.BytesIO()
    pil_image.save(buffer, format=format_name, **options)
    return len(buffer.getvalue())


def codec_bits_per_dim(pixels, mode) -> dict:
    """PNG (Pillow, optimize) and WebP-lossless (method 6) of the same pixels in their own mode,
    in bits per dim; WebP is None for modes it cannot hold losslessly (16-bit grey)."""
    from vae_jax.images import to_pil

    image = to_pil(pixels, mode)
    dims = pixels.size
    webp = None
    if mode in ("L", "LA", "RGB", "RGBA"):
        webp = 8 * _codec_bytes(image, "WEBP", lossless=True, quality=100, method=6) / dims
    return {"png_bits_per_dim": 8 * _codec_bytes(image, "PNG", optimize=True) / dims, "webp_bits_per_dim": webp}


def _coded_elbo(model, params, image, key):
    """ELBO in nats of what the coder codes: per plane, the sum over tiles of
    E_q[log p(x_valid|z)] - KL, x_valid the tile's image pixels (one draw of z per tile)."""
    total = 0.0
    for plane in split_planes(image, model.data_shape[-1]):
        tiles, grid = tiling.split(plane, model.data_shape[:2], mode="edge")
        key, tile_key = jax.random.split(key)
        keys = jax.random.split(tile_key, tiles.shape[0])
        terms = model.infer(params, jnp.asarray(tiles, jnp.int32), keys)
        log_px = model.likelihood.log_prob(jnp.asarray(tiles, jnp.float32), terms.decoder_out)
        if log_px.ndim == 4:  # per sub-pixel: sum to per pixel, as a coupled likelihood gives it
            log_px = jnp.sum(log_px, axis=-1)
        rows, cols = np.indices(tiles.shape[1:3])
        valid = np.stack([(rows < h) & (cols < w) for h, w in valid_sizes(grid)])
        total += float(jnp.sum(jnp.where(valid, log_px, 0.0)) - jnp.sum(sum(terms.kl_groups)))
    return total


def compression_report(model, params, pixels, *, mode=None, seed=0, elbo_samples=1, progress=None):
    """Compress ``pixels`` once and decode the result once, and compare with the model and with
    the codecs a user would pick instead. ``seed`` fixes the initial bits and the ELBO's draws.
    Returns ``(blob, report)``; ``report`` is a dict of JSON-ready numbers:

    - ``bits_per_dim``: the whole file (header, CRC, initial-bits overhead included) over the
      image's ``H * W * n`` dims; ``png_bits_per_dim`` and ``webp_bits_per_dim`` of the same
      pixels in their own mode;
    - ``net_bits_per_dim``: the ANS stream's growth beyond the initial words, over the same dims:
      the rate a long stream of tiles would approach; ``neg_elbo_bits_per_dim``: the negative
      ELBO of what is coded (every tile's latent, the image pixels of every tile, every plane),
      averaged over ``elbo_samples`` draws: the rate the net one should approach;
    - ``initial_bits_overhead`` (the consumed initial bits, paid once per file), ``header_bits``;
    - ``round_trip_exact`` (always True: a mismatch raises ``CompressionError``),
      ``encode_seconds``, ``decode_seconds``.
    """
    check_codable(model)
    image = _as_pixels(pixels)
    mode = default_mode(image.shape[-1]) if mode is None else mode
    started = time.perf_counter()
    blob = compress_image(model, params, image, seed, mode=mode, progress=progress)
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decompress_image(model, params, blob, progress=progress)
    decode_seconds = time.perf_counter() - started
    if not np.array_equal(decoded, image):
        raise CompressionError("the decoded image differs from the input: this coder is broken here")
    fields = read_header(blob)
    dims = image.size
    stream_words = fields["stripped_words"] + fields["num_words"]
    keys = jax.random.split(jax.random.key(seed), elbo_samples)
    neg_elbo_nats = np.mean([-_coded_elbo(model, params, image, k) for k in keys])
    codecs = codec_bits_per_dim(image, mode) if mode in ("L", "LA", "RGB", "RGBA", "I;16") else {}
    report = {
        "image_shape": list(image.shape),
        "mode": mode,
        "num_tiles": num_tiles(model, image.shape),
        "file_bytes": len(blob),
        "bits_per_dim": 8 * len(blob) / dims,
        "net_bits_per_dim": 32 * (stream_words - fields["num_initial_words"]) / dims,
        "neg_elbo_bits_per_dim": float(neg_elbo_nats / (dims * math.log(2.0))),
        "initial_bits_overhead": 32 * (fields["num_initial_words"] - fields["stripped_words"]),
        "header_bits": 8 * (_HEADER.size + _CRC.size),
        **codecs,
        "round_trip_exact": True,
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
    }
    return blob, report


def run_compression(model, params, pixels, *, out_path, mode=None, seed=0, force=False, progress=None):
    """Code ``pixels`` once, verify by decoding once, then write the file to ``out_path`` (never
    over an existing file unless ``force``; checked before any work). Returns
    ``compression_report``'s dict plus ``"file"``."""
    from vae_jax.images import check_writable

    out_path = check_writable(out_path, force=force)
    blob, report = compression_report(model, params, pixels, mode=mode, seed=seed, progress=progress)
    out_path.write_bytes(blob)
    return {**report, "file": str(out_path)}
