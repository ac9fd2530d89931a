"""Bits-back ANS coding of image tiles with every latent group of a model, a wave of tiles at a time.

A model of latent groups z_1 (top) .. z_G, p(x, z) = p(z_1) prod_{g>1} p(z_g | z_<g) p(x | z)
and q(z | x) = prod_g q(z_g | x, z_<g) (a one-group model is G = 1, coded through its
``posterior`` and ``decoder_output``; a ``model.HierarchicalModel`` any G, through its top-down
steps), codes a tile ``x`` on an ANS stack (last in, first out) with the nested bits-back scheme
of HiLLoC (Townsend et al. 2020) and Bit-Swap (Kingma et al. 2019):

    encode:  for g = 1..G:  z_g <- decoded under Q(z_g | x, z_<g)   (bits back: -log2 Q off)
             push x under P(x | z): channel last to first, so R, G | R, B | R, G pop in order
             push z_G under P(z_G | z_<G), ..., z_2 under P(z_2 | z_1), z_1 under P(z_1)
    decode:  pop z_1 under P(z_1), z_2 under P(z_2 | z_1), ..., z_G; pop x under P(x | z);
             push z_G, ..., z_1 back under Q(z_g | x, z_<g), from the decoded x,

so a tile costs -log2 P(x|z) - sum_g log2 P(z_g|z_<g) + sum_g log2 Q(z_g|x,z_<g) bits, whose
mean under Q is the negative ELBO of the discretized model.

The pops need bits on the stack: about sum_g H(Q(z_g | .)) in bins, (latent dims) x (log2(sigma_q
/ w) + 2.05) bits, several times what the tile adds net (a ladder has more latent dims than
pixel dims, and an inactive one, q = p, pops ~log2(1/w) + 2 bits and costs nothing net). Pops
give draws from Q only while they read coded data: a pop reads the ANS head's lowest 24 bits
(the models' precision), and with fewer coded bits left those are the zeros of an empty coder,
so the last pops give the lowest, far-off bins, each such latent then costing its pixels far
more than the -ELBO says. So a tile takes bits back only if its pops leave ``POP_RESERVE_BITS``
(24 and a margin) on the stack. A tile whose pops would run the stack that low either goes
without bits back (``bits_back=False``: z_g is the bin of the posterior mean given the binned
z_<g, nothing is popped, and the decoder pushes nothing back: the tile costs -log2 P(x | z) -
log2 P(z), about sum_g H(Q(z_g | .)) in bins more than with bits back) or, with ``push(...,
require_bits_back=True)``, is not coded at all, so that the caller can code it as smaller tiles
(``vae_jax.apps.compression`` starts the chain so).

Discretization:

- latents: every dimension on the grid z = w i, w = 2**-bin_log2, i in [-M, M] (M = max_abs / w);
  Q(i) and P(i) are the Gaussians N(mean, std^2) integrated over the bins of width w, the mass
  beyond the range on its edge bins (``constriction``'s ``QuantizedGaussian`` on i with mean / w,
  std / w). Q is coded in two steps (``TileCoder._pop_posterior``): the cell of 2**k bins
  (2**k <= std / 2 bins, at least 1) among the 65 cells around the mean's bin, under Q
  integrated over the cells (``QuantizedGaussian``), then the bin within the cell under Q
  restricted to it (a ``Categorical`` of the density at its bins). One ``QuantizedGaussian``
  over all 2 M + 1 bins would do the same in one step but not in fixed point: every bin gets at
  least 2**-24, so a pop lands anywhere in [-M, M] with probability (2 M + 1) 2**-24 (1.2e-4 per
  latent at w = 1/64, 5e-4 at 1/256), a latent tens of posterior stds off whose pixels then
  cost far more than their -ELBO, the more often the finer the bins (more bins to leak to). The
  cells leak 65 * 2**-24 per latent, and only within the window (8 to 16 stds either side); a
  cell's bins f * 2**-24, within the cell. For w well below the posterior standard deviations
  the net latent cost log2 Q(i) - log2 P(i) tends to log2 q(z) - log2 p(z), the ELBO's KL term,
  and the decoder sees z within w/2 of a continuous draw; the test of the rate against the
  -ELBO measures what is left. A mixture top prior (``MixtureOfGaussians``, ``VampPrior``)
  codes z_1 with bits back over the component k: pop k under P(k | z_1) ~ pi_k N(z_1; mu_k,
  sigma_k^2), push z_1 under component k, push k under pi.
- pixels: each sub-pixel a categorical over its 256 values, quantized by
  ``constriction.stream.model.Categorical(perfect=False)``, in the likelihood's
  ``coding_order``, which follows from what each pixel reads (its ``context``): pixels that read
  no neighbour ``chunk_pixels`` at a time, so memory is bounded for any tile; the local
  mixtures' pixels, which read their left, up, up-left and up-right neighbours, one wavefront
  2i + j at a time (2h + w - 2 steps, h in a tile one pixel wide), the tables of a step built
  from the values the steps before it decoded. The encoder pushes the steps in the reverse
  order. Neighbours never cross a tile's border (the likelihood sees each tile as an image). The
  coupled mixtures (one component k shared by a pixel's R, G | R, B | R, G) are coded with bits
  back over k (``_PixelCoder``): pop k under P(k | x) ~ pi_k prod_c P_k(x_c | x_<c), push each
  channel under component k alone, push k under pi; other likelihoods under their own
  256-value tables (``coding_tables``). Both cost -log2 P(x | z) on average; the first needs one
  component a channel instead of K (the tables are most of the coder's own work), and codes a
  value under that one logistic in two steps, its cell of 8 values under the 32 cells' masses,
  then the value within the cell (``logistic.cell_table``, ``logistic.within_table``): the same
  distribution for the CDF at 38 edges a value instead of a 256-value table's 255.
- waves: n tiles of one shape coded as one unit of the scheme, x and each z_g the n tiles
  together (their distributions are products over the tiles): every group's pops for all the
  tiles, the pixels wavefront by wavefront of every tile at once, the priors' pushes, each a few
  array calls of constriction, the networks on the whole wave (``TileCoder.push_waves``).

Reproducible probabilities: the decoder must rebuild the encoder's probabilities bit for bit.

- Every parameter a distribution is built from is snapped to a fixed grid first: latent means
  and standard deviations to multiples of 2**-LATENT_GRID_LOG2 of a bin, the decoder's output
  as the tables read it (``coding_output``: the likelihood's means, log-scales, mixture logits,
  tanh of the coupling and neighbour coefficients) to multiples of 2**-OUTPUT_GRID_LOG2. A
  network whose output moves by a few float32 ulps (another fusion, eager execution, another
  batch layout) then almost always gives the very same snapped value.
- The 256-value tables are computed in numpy float64 from the snapped parameters, each pixel's
  alone (``likelihoods.logistic``: the logistic CDF at the 255 bin edges, differenced, the
  mixture components added in order), and so is the top prior's component posterior: no compiler
  sits between the encoder's numbers and the decoder's, and the chunking cannot change them.
  (Computing them with XLA, even in float64, differed between a jitted and an eager run: the
  likelihoods place the bin centres in float32, which XLA rounds differently fused.)
- The networks run in calls whose sizes follow from a wave's tile count alone (``network_calls``:
  ``CALL_TILES``, the rest in one call of 1, 4 or 16 tiles), encoder and decoder alike: XLA's
  CPU kernels round float32 differently at other batch sizes.
- Group g's prior comes from one compiled step (``_ladder_prior``: group g - 1's merge of its
  bins, ``top_down_merge``, then ``top_down_to_group`` without x), its posterior from another
  (``_ladder_posterior``: ``top_down_posterior``) of that step and x's bottom-up features: the
  encoder's pops, its pushes under the priors and the decoder's pops and pushes run the same
  steps on the same bins, so encoder and decoder evaluate identical programs on identical
  inputs, and a tile costs one top-down pass (``TileCoder._walk``). The decoder walks on priors
  alone (it has no x yet), then, once it has decoded x, runs only the posterior steps at the
  steps its walk reached (``TileCoder._posteriors``), not the walk again.

What remains: a snapped value can still flip where the network's output sits within an ulp of
a grid point, and a different backend or library version may round the networks differently;
decode on the platform that encoded (a flip decodes garbage from there on, which the file's
checksum of the image, ``compression.image_checksum``, or the coder itself refuses loudly). On
CPU the thread count does not matter (XLA's pool on one core or two decodes the same), but
XLA_FLAGS=--xla_cpu_multi_thread_eigen=false selects other convolution kernels, and files do
not decode across that switch.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax.errors import FlaxError

from vae_jax.likelihoods import coupled, logistic
from vae_jax.model import HierarchicalModel, as_latent, latent_groups
from vae_jax.priors import StandardNormal

LATENT_GRID_LOG2 = 8  # latent means / stds (in bins) are multiples of 1/256 of a bin
OUTPUT_GRID_LOG2 = 12  # the likelihood's parameters are multiples of 2**-12
# Q's window: 2 POSTERIOR_CELLS + 1 cells around the posterior mean, each under std / 2 bins wide
POSTERIOR_CELLS = 32
# A tile takes bits back only if its pops leave this many bits on the stack (module docstring).
POP_RESERVE_BITS = 32
# The pixels a component coder codes together where they read no neighbours (the file depends on it).
COMPONENT_SET_PIXELS = 4096
# Table memory: a chunk's temporaries are about 256 * 8 bytes * (numbers per pixel) a few times over
# per pixel; 2**16 / numbers pixels keeps them near 50 MB whatever the likelihood.
_TABLE_BUDGET = 2**16


def check_codable(model):
    """Raise a clear ValueError unless ``model`` can code 8-bit pixels with this coder."""
    if model.num_groups != 1 and not _steps_top_down(model):
        raise ValueError(
            f"model: bits-back coding handles one-group models and HierarchicalModels (the top-down "
            f"HierarchicalVAE), whose posterior q(z_g | x, z_<g) follows the generative order and which "
            f"run their top-down pass a group at a time; got {type(model).__name__} with {model.num_groups} groups"
        )
    if model.likelihood.input_kind != "discrete":
        raise ValueError(
            f"model.likelihood: lossless coding of 8-bit pixels needs a discrete likelihood (input_kind "
            f"'discrete', with the coding tables of vae_jax.likelihoods.DiscreteLikelihood), got "
            f"{type(model.likelihood).__name__} of input_kind {model.likelihood.input_kind!r}"
        )
    if len(model.data_shape) != 3:
        raise ValueError(f"model.data_shape: expected (H, W, C) images, got {model.data_shape}")


def _steps_top_down(model) -> bool:
    """Whether the coder walks ``model``'s groups with its top-down steps (a ``HierarchicalModel``,
    even of one group: its files were always coded so), else as one group through ``posterior``
    and ``decoder_output``."""
    return isinstance(model, HierarchicalModel)


# ---------------------------------------------------------------- the model's shapes


def _sizes(model):
    """The data's (H, W) over the smallest latent group's: the size a tile's sides must divide by."""
    height, width = model.data_shape[:2]
    smallest = min(latent_groups(model.latent_template), key=lambda s: s.shape[0] * s.shape[1])
    return height // smallest.shape[0], width // smallest.shape[1]


@functools.lru_cache(maxsize=32)
def _abstract_params(model):
    """The shapes and dtypes of ``model``'s params (tracing its init costs a second or more: once a model)."""
    return jax.eval_shape(model.init, jax.random.key(0))


@functools.lru_cache(maxsize=32)
def fully_convolutional(model) -> bool:
    """Whether the same params code tiles of other sizes: the networks run on a (2H, 2W) image
    and the prior is the standard normal (a learned mixture's components have the training
    latent's shape)."""
    if not isinstance(model.prior, StandardNormal):
        return False
    height, width, channels = model.data_shape
    params = _abstract_params(model)
    x = jax.ShapeDtypeStruct((1, 2 * height, 2 * width, channels), jnp.int32)
    try:
        mean, _ = jax.eval_shape(model.posterior, params, x)
        out = jax.eval_shape(model.decoder_output, params, mean)
    except (TypeError, ValueError, FlaxError):  # a dense layer is tied to the training size
        return False
    return tuple(out.shape[1:3]) == (2 * height, 2 * width)


@functools.lru_cache(maxsize=256)
def _traced_group_shapes(model, padded_hw):
    """The latent groups' shapes (1, h_g, w_g, c_g) for a padded tile, by tracing the posterior (a
    third of a second a shape for the shipped ladder)."""
    params = _abstract_params(model)
    x = jax.ShapeDtypeStruct((1, *padded_hw, model.data_shape[-1]), jnp.int32)
    mean, _ = jax.eval_shape(model.posterior, params, x)
    return tuple(g.shape for g in latent_groups(mean))


@functools.lru_cache(maxsize=256)
def _group_shapes(model, padded_hw):
    """The latent groups' shapes for a padded tile: the model's alone, not its params' values, so
    cached across coders. A fully convolutional model's groups scale with the tile: group g of
    (h_g, w_g) at the training size (H, W) is (h_g h / H, w_g w / W) on a tile of (h, w), exactly,
    the sides being multiples of ``tile_unit``; so one trace a model, not one a tile shape (a
    fresh ``decompress`` of a photograph with nine tile shapes spent 2.7 s tracing them)."""
    if not fully_convolutional(model) or tuple(padded_hw) == tuple(model.data_shape[:2]):
        return _traced_group_shapes(model, tuple(padded_hw))
    (height, width), (h, w) = model.data_shape[:2], padded_hw
    trained = _traced_group_shapes(model, (height, width))
    return tuple((batch, h_g * h // height, w_g * w // width, *rest) for batch, h_g, w_g, *rest in trained)


def tile_unit(model):
    """(uh, uw): a tile's padded sides are multiples of it (the whole ``data_shape`` for a model
    tied to its training size)."""
    return _sizes(model) if fully_convolutional(model) else tuple(model.data_shape[:2])


# ---------------------------------------------------------------- jitted model pieces


def _snap(values, grid_log2):
    """``values`` rounded to multiples of 2**-grid_log2 (exact: scaling by a power of two)."""
    return jnp.round(values * 2.0**grid_log2) * 2.0**-grid_log2


def _in_bins(mean, log_var, bin_log2):
    """(mean / w, std / w) as (tiles, dims) and snapped; std at least one grid step."""
    std = jnp.exp(0.5 * jnp.clip(log_var, -60.0, 60.0))
    step = 2.0**-LATENT_GRID_LOG2
    tiles = mean.shape[0]
    return (
        _snap(mean.reshape(tiles, -1) * 2.0**bin_log2, LATENT_GRID_LOG2),
        jnp.maximum(_snap(std.reshape(tiles, -1) * 2.0**bin_log2, LATENT_GRID_LOG2), step),
    )


# A wave runs the networks in calls of CALL_TILES tiles and its last few tiles in one call of
# REST_CALL_TILES (the smallest that holds them, filled up with copies), encoder and decoder alike:
# XLA's CPU kernels give other float32 roundings at other batch sizes (batches of 1 and 2, and 8 on
# small tiles, differ from 16 and up), and the decoder must rebuild the encoder's numbers bit for
# bit, so a call's size follows from the wave's tile count alone, which the file records. A tile's
# numbers do not depend on where in a call it sits or on the call's other tiles; calls never mix
# two images' tiles, so that waves of several images decode image by image. Calls of 1 and 4 too,
# not CALL_TILES for every call: the chain start's waves of 1, 2, 3 .. 11 tiles would otherwise
# cost a full call each. Not every power of two: each size is a set of programs a fresh process
# traces (on chelsea, sizes 1, 2, 4, 8, 16 took a `decompress` 10.4 s, sizes 1, 4, 16 9.5 s, at
# the same speed once traced).
CALL_TILES = 16
REST_CALL_TILES = (1, 4, CALL_TILES)


def network_calls(tiles):
    """How a wave of ``tiles`` tiles of one image runs the networks: (first tile, tiles, call size)
    per call, calls of ``CALL_TILES`` and the rest in one call of ``REST_CALL_TILES``."""
    if not (isinstance(tiles, (int, np.integer)) and tiles >= 1):
        raise ValueError(f"tiles: expected a positive int, got {tiles!r}")
    whole = tiles - tiles % CALL_TILES
    calls = [(start, CALL_TILES, CALL_TILES) for start in range(0, whole, CALL_TILES)]
    if whole < tiles:
        rest = tiles - whole
        calls.append((whole, rest, next(size for size in REST_CALL_TILES if size >= rest)))
    return calls


def _job_calls(counts):
    """``network_calls`` of each job of ``counts`` tiles, the jobs' tiles stacked in order."""
    starts = np.cumsum([0, *counts[:-1]])
    return [
        (int(start) + first, n, size) for start, count in zip(starts, counts) for first, n, size in network_calls(count)
    ]


def _filled(batch, size):
    """``batch`` (n, ...) completed to ``size`` rows with copies of its last."""
    batch = np.asarray(batch)
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])


@partial(jax.jit, static_argnums=0)
def _posterior_inputs(model, params, tiles):
    """What the posteriors read of x (B, H, W, C): a ``HierarchicalModel``'s bottom-up features,
    or a one-group model's q(z | x) itself."""
    if _steps_top_down(model):
        return model.bottom_up_features(params, tiles)
    return model.posterior(params, tiles)


def _merged(model, bin_log2, g, params, step, bins):
    """The top-down state after group g's merge of z_g = w * bins into ``step``."""
    return model.top_down_merge(params, step, bins.astype(jnp.float32) * 2.0**-bin_log2, g)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _ladder_prior(model, bin_log2, g, tile_hw, batch, params, step, bins):
    """Group g's step and P(z_g | z_<g) (None for g = 0: the model's prior) on the bin-index scale
    and snapped, from group g - 1's ``step`` merged with its ``bins`` (for g = 0 from the start, for
    ``batch`` tiles of ``tile_hw``): one program a group, with no x in it, that encoder and
    decoder run on the same inputs."""
    if g == 0:
        state = model.top_down_start(params, batch, tile_hw)
    else:
        state = _merged(model, bin_log2, g - 1, params, step, bins)
    step, prior, _ = model.top_down_to_group(params, state, None, g)
    return step, None if prior is None else _in_bins(*prior, bin_log2)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _ladder_posterior(model, bin_log2, g, params, step, features):
    """Q(z_g | x, z_<g) on the bin-index scale and snapped, at group g's ``step``, from x's bottom-up
    ``features``: the encoder's before its pops, the decoder's from the x it decoded."""
    return _in_bins(*model.top_down_posterior(params, step, features, g), bin_log2)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _ladder_output(model, bin_log2, g, params, step, bins):
    """P(x | z)'s parameters as the tables read them (``coding_output``), snapped, after the last
    group g's merge of its bins: ``(B, H, W, ...)``."""
    out = model.top_down_output(params, _merged(model, bin_log2, g, params, step, bins))
    return _snap(model.likelihood.coding_output(out), OUTPUT_GRID_LOG2)


_posterior_in_bins = jax.jit(_in_bins, static_argnums=2)


@partial(jax.jit, static_argnums=(0, 1))
def _decoder_output(model, bin_log2, params, bins):
    """P(x | z)'s parameters at z = w * bins as the tables read them (``coding_output``), snapped:
    ``(B, H, W, ...)``."""
    z = as_latent(b.astype(jnp.float32) * 2.0**-bin_log2 for b in bins)
    return _snap(model.likelihood.coding_output(model.decoder_output(params, z)), OUTPUT_GRID_LOG2)


@partial(jax.jit, static_argnums=(0, 1))
def _top_prior(model, bin_log2, params):
    """The top prior's components: snapped logits (K,), means and stds in bins (K, L)."""
    components = model.prior_components(params)
    k = components.means.shape[0]
    means, stds = _in_bins(components.means.reshape(k, -1), components.log_vars.reshape(k, -1), bin_log2)
    return _snap(components.logit_weights, OUTPUT_GRID_LOG2), means, stds


class _PixelCoder:
    """Codes the valid pixels of a wave of tiles, stacked one under the other, under P(x | z):
    in the likelihood's ``coding_order`` (the decoder's; the encoder pushes in reverse), with its
    own tables, NumPy float64 from the snapped decoder output, so that the decoder rebuilds them
    bit for bit.

    A mixture whose channels share each pixel's component (``coding_rows`` not None: the coupled
    ones) is coded with bits back over the component, as the top prior's mixture is: the decoder
    pops k under pi, each channel under component k alone (``coupled.coupled_channel``; a value
    as its cell of 8, then the value in the cell: ``_pop_value``), then
    pushes k back under P(k | x) propto pi_k prod_c P_k(x_c | x_<c); the encoder mirrors it. A
    pixel costs -log2 P(x) on average as with the mixture's own table, for one component's table
    a channel instead of K, the tables' cost; the component pops read the bits the latents' pops
    leave. Other likelihoods: each sub-pixel under its 256-value table (``coding_tables``)."""

    def __init__(self, likelihood, out, valid_hw, chunk, channels, categorical):
        valid_h, valid_w = valid_hw
        tiles = out.shape[0]
        stacked = np.asarray(out[:, :valid_h, :valid_w], np.float64)
        stacked = stacked.reshape(tiles * valid_h, *stacked.shape[2:])
        self.categorical, self.channels = categorical, channels
        self._rows = likelihood.coding_rows(stacked, valid_h)
        # The component's pops and pushes interleave set by set, so the sets are part of the file:
        # of a fixed size, not the caller's memory bound ``chunk``.
        chunk = chunk if self._rows is None else COMPONENT_SET_PIXELS
        self.schedule = likelihood.coding_order((valid_h, valid_w), channels, chunk, tiles)
        if self._rows is None:
            self._tables = likelihood.coding_tables(stacked, valid_h)
        else:
            self.k = likelihood.num_components
            # A pixel's channels are coded together: the steps of one pixel set, its channels in order.
            self.groups = [indices for indices, channel in self.schedule if channel == 0]

    def table(self, indices, x_all, channel):
        """(n, 256) float64: P(x_c = v | z, what it reads) of the raster pixels ``indices`` of the
        stack (the mixture's own table), x_all (pixels, C) holding every value these read."""
        return _finite(self._tables(indices, x_all, channel))

    def _components(self, indices, x_all):
        """Per channel, given the pixels' earlier channels in x_all: (means, log-scales) (n, K)."""
        rows = _finite(self._rows(indices, x_all))
        x_rows = x_all[indices]
        return rows[:, : self.k], [coupled.coupled_channel(rows, x_rows, c, self.k) for c in range(self.channels)]

    def _component_posterior(self, logits, channels, x_rows):
        """P(k | x) propto pi_k prod_c P_k(x_c | x_<c): (n, K), unnormalized."""
        log_posterior = logits.copy()
        for c, (means, log_scales) in enumerate(channels):
            log_posterior += np.log(np.maximum(logistic.logistic_mass(x_rows[:, c], means, log_scales), 1e-300))
        return np.exp(log_posterior - log_posterior.max(axis=1, keepdims=True))

    @staticmethod
    def _chosen(component, k):
        """Component k's logistics of (n, K) ones (means, log-scales), one k a row, as the two
        steps code them (``logistic.cell_coding``)."""
        means, log_scales = component
        rows = np.arange(len(k))
        return logistic.cell_coding(means[rows, k], log_scales[rows, k])

    def _push_value(self, ans, values, chosen):
        """Push 8-bit values under one logistic each (``_chosen``): v % 8 within its cell, then
        the cell v // 8, so that the decoder pops the cell first."""
        cells = values // logistic.CELL_VALUES
        within = values - cells * logistic.CELL_VALUES
        ans.encode_reverse(within, self.categorical, logistic.within_table(chosen, cells))
        ans.encode_reverse(cells, self.categorical, logistic.cell_table(chosen))

    def _pop_value(self, ans, chosen):
        cells = ans.decode(self.categorical, logistic.cell_table(chosen))
        within = ans.decode(self.categorical, logistic.within_table(chosen, cells))
        return cells * logistic.CELL_VALUES + within

    def push(self, ans, x_all):
        """Encode the pixels x_all (pixels, C) int32 onto ``ans``."""
        if self._rows is None:
            for indices, channel in reversed(self.schedule):
                symbols = np.ascontiguousarray(x_all[indices, channel])
                ans.encode_reverse(symbols, self.categorical, self.table(indices, x_all, channel))
            return
        # The encoder knows every pixel: the components of many sets at once, in a few large array
        # calls (row by row the same numbers as the decoder's set by set), blocks of sets small
        # enough to stay in cache; only the chosen component's tables wait for its pop.
        for block in reversed(_blocks_of(self.groups, _ENCODER_BLOCK_PIXELS)):
            everything = np.concatenate(block)
            logits, channels = self._components(everything, x_all)
            x_rows = x_all[everything]
            posterior = self._component_posterior(logits, channels, x_rows)
            prior = np.exp(logits - logits.max(axis=1, keepdims=True))
            ends = np.cumsum([len(indices) for indices in block])
            for end, indices in zip(ends[::-1], block[::-1]):
                at = slice(end - len(indices), end)
                k = self._pop_component(ans, posterior[at])
                for c in reversed(range(self.channels)):
                    means, log_scales = channels[c]
                    chosen = self._chosen((means[at], log_scales[at]), k)
                    self._push_value(ans, np.ascontiguousarray(x_rows[at, c]), chosen)
                self._push_component(ans, k, prior[at])

    def pop(self, ans, x_all):
        """Decode the pixels into x_all (pixels, C) int32 (zeros on entry); each step reads only
        what the steps before it decoded."""
        if self._rows is None:
            for indices, channel in self.schedule:
                x_all[indices, channel] = ans.decode(self.categorical, self.table(indices, x_all, channel))
            return
        for indices in self.groups:
            rows = _finite(self._rows(indices, x_all))
            logits = rows[:, : self.k]
            k = self._pop_component(ans, np.exp(logits - logits.max(axis=1, keepdims=True)))
            channels = []
            for c in range(self.channels):  # channel c's components read the channels before it, decoded
                channels.append(coupled.coupled_channel(rows, x_all[indices], c, self.k))
                x_all[indices, c] = self._pop_value(ans, self._chosen(channels[c], k))
            self._push_component(ans, k, self._component_posterior(logits, channels, x_all[indices]))

    # One component: nothing to code (and constriction has no one-symbol categorical).

    def _pop_component(self, ans, probabilities):
        return ans.decode(self.categorical, probabilities) if self.k > 1 else np.zeros(len(probabilities), np.int32)

    def _push_component(self, ans, k, probabilities):
        if self.k > 1:
            ans.encode_reverse(k, self.categorical, probabilities)


# The pixels whose components the encoder computes in one go (speed only: the file does not depend on it).
_ENCODER_BLOCK_PIXELS = 1024


def _blocks_of(groups, pixels):
    """``groups`` (index arrays) in runs of consecutive ones of about ``pixels`` pixels each."""
    blocks, size = [[]], 0
    for indices in groups:
        if size >= pixels:
            blocks.append([])
            size = 0
        blocks[-1].append(indices)
        size += len(indices)
    return blocks


def _finite(table):
    if not np.all(np.isfinite(table)):
        raise ValueError("likelihood: the model produced non-finite probabilities; cannot code with it")
    return table


def _checked(arrays):
    arrays = tuple(np.asarray(a, np.float64) for a in arrays)
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("model: the networks produced non-finite latent statistics; cannot code with them")
    return arrays


def _cell_shift(f):
    """Cell a of width f holds the bins c + a f - f // 2 .. c + a f + f - 1 - f // 2, centred on
    c + a f - shift: on the cells' scale, bin i sits at (i - c + shift) / f."""
    return 0.5 if f > 1 else 0.0


class TileCoder:
    """The entropy models of one (model, params, latent grid): codes waves of tiles onto an ANS stack.

    A wave is ``n`` tiles of one shape coded in lockstep as one unit of the bits-back scheme (the
    module docstring, with x and each z_g the wave's tiles together: their posteriors, priors and
    likelihoods are products over the tiles): every group's pops for all the tiles, then the
    pixels wavefront by wavefront of every tile at once, then the groups' prior pushes, each a
    few array calls of ``constriction``, and the networks run on the whole wave in calls of
    ``CALL_TILES`` (``network_calls``). A wave of one tile is the scheme for one tile.
    ``chunk_pixels`` only sets memory and speed; files do not depend on it.
    """

    def __init__(self, model, params, bin_log2, max_abs, chunk_pixels=None):
        import constriction

        check_codable(model)
        self.model, self.params, self.bin_log2 = model, params, int(bin_log2)
        self.top_down = _steps_top_down(model)
        self.max_index = int(max_abs) * 2 ** int(bin_log2)
        self.latent_family = constriction.stream.model.QuantizedGaussian(-self.max_index, self.max_index)
        self._cells = constriction.stream.model.QuantizedGaussian(-POSTERIOR_CELLS, POSTERIOR_CELLS)
        self.categorical = constriction.stream.model.Categorical(perfect=False)
        numbers = int(np.prod(model.likelihood.params_shape(model.data_shape)[2:]))
        self.chunk = int(chunk_pixels) if chunk_pixels else max(16, _TABLE_BUDGET // numbers)
        if self.chunk < 1:
            raise ValueError(f"chunk_pixels: expected a positive int, got {chunk_pixels!r}")
        self._top_prior = {}

    # ---- shapes and cached pieces per padded tile shape

    def _group_shapes(self, padded_hw):
        return _group_shapes(self.model, tuple(padded_hw))

    def _top(self, size):
        """The top prior over a top group of ``size`` dims: (pi unnormalized, means, stds)."""
        if size not in self._top_prior:
            if isinstance(self.model.prior, StandardNormal):  # any size: N(0, 1) is w^-1 bins wide
                logits, means, stds = np.zeros(1), np.zeros((1, size)), np.full((1, size), 2.0**self.bin_log2)
            else:
                logits, means, stds = _checked(_top_prior(self.model, self.bin_log2, self.params))
                if means.shape[1] != size:
                    raise ValueError(f"model.prior: its components have {means.shape[1]} dims, the tile's z_1 {size}")
            self._top_prior[size] = (np.exp(logits - logits.max())[None], means, stds)
        return self._top_prior[size]

    def _walk(self, padded_hw, features, calls, choose, steps_seen=None):
        """The groups of a wave of ``tiles`` tiles of ``padded_hw`` top-down, one at a time:
        ``choose(g, posterior, prior)`` gets group g's statistics in bins (numpy (tiles, dims);
        the top group's prior None: the model's; the posterior None without ``features``) and
        returns z_g's bins (tiles, dims), or None to stop. ``features`` holds one entry per
        network call of ``calls`` (``network_calls``), or is None (the decoder, which has no x
        yet). Returns the bins (tiles, *shape) per group and the likelihood's parameters (numpy
        (tiles, h, w, ...), snapped), or None if stopped. One top-down pass in all: the model's
        state is carried from group to group. The encoder and the decoder run the same compiled
        steps (``_ladder_prior``, then ``_ladder_posterior`` where x is known) on the same bins
        in the same calls, so they get the same numbers. ``steps_seen``, a list, gets each
        group's steps, per call (``_posteriors`` reads them)."""
        shapes = self._group_shapes(padded_hw)
        bins, steps = [None] * len(shapes), [None] * len(calls)
        for g, shape in enumerate(shapes):
            posteriors, priors = [], []
            for c, (first, count, size) in enumerate(calls):
                previous = None if g == 0 else _filled(bins[g - 1][first : first + count], size)
                steps[c], prior = self._prior(padded_hw, g, size, steps[c], previous)
                priors.append(None if prior is None else [np.asarray(a)[:count] for a in prior])
                if features is not None:
                    posteriors.append([np.asarray(a)[:count] for a in self._posterior(g, steps[c], features[c])])
            if steps_seen is not None:
                steps_seen.append(list(steps))
            posterior = None if features is None else _checked(np.concatenate(parts) for parts in zip(*posteriors))
            prior = None if priors[0] is None else _checked(np.concatenate(parts) for parts in zip(*priors))
            chosen = choose(g, posterior, prior)
            if chosen is None:
                return None
            bins[g] = np.asarray(chosen, np.int32).reshape(-1, *shape[1:])
        last = len(shapes) - 1
        outputs = [
            np.asarray(self._output(last, step, _filled(bins[last][first : first + count], size)))[:count]
            for step, (first, count, size) in zip(steps, calls)
        ]
        return bins, np.concatenate(outputs)

    def _posteriors(self, features, calls, steps_seen):
        """Every group's Q(z_g | x, z_<g) in bins (tiles, dims) at the steps a walk over the same bins
        reached (``steps_seen``): the encoder's numbers, without the walk again."""
        posteriors = []
        for g, steps in enumerate(steps_seen):
            parts = [self._posterior(g, step, features[c]) for c, step in enumerate(steps)]
            posteriors.append(_checked(np.concatenate([np.asarray(a)[:count] for a, (_, count, _) in zip(column, calls)])
                                       for column in zip(*parts)))  # fmt: skip
        return posteriors

    # The compiled steps of the walk: a HierarchicalModel's top-down steps, or one group's whole
    # posterior (``_posterior_inputs`` computed it) and its decoder.

    def _prior(self, padded_hw, g, size, step, previous_bins):
        if self.top_down:
            return _ladder_prior(self.model, self.bin_log2, g, padded_hw, size, self.params, step, previous_bins)
        return None, None

    def _posterior(self, g, step, features):
        if self.top_down:
            return _ladder_posterior(self.model, self.bin_log2, g, self.params, step, features)
        return _posterior_in_bins(*features, self.bin_log2)

    def _output(self, g, step, bins):
        if self.top_down:
            return _ladder_output(self.model, self.bin_log2, g, self.params, step, bins)
        return _decoder_output(self.model, self.bin_log2, self.params, (bins,))

    def _features(self, tiles, calls):
        """The posteriors' inputs of a wave of tiles (n, h, w, C), one entry per network call."""
        return [
            _posterior_inputs(self.model, self.params, jnp.asarray(_filled(tiles[first : first + count], size), jnp.int32))
            for first, count, size in calls
        ]

    # ---- a group under its posterior: a cell of the window around the mean, then the bin in it

    def _windows(self, mean, std):
        """Per latent: the cell width f (0: no window, the whole range in one step, only where M <
        POSTERIOR_CELLS) and the window's centre bin c. Cells of f = 2**ceil(log2(std / 4)) bins
        (at least 1), so the window's 2 POSTERIOR_CELLS + 1 cells reach 8 standard deviations
        either side; at most the widest cells whose window fits in [-M, M] (a posterior wider
        than about the prior then reaches less far: its tails lie on the window's first and last
        cells, as the whole range's edge bins would take them); c = round(mean), moved so that
        the window lies inside [-M, M]."""
        widest = 2.0 ** np.floor(np.log2(max(self.max_index, 1) / (POSTERIOR_CELLS + 0.5)))
        cell = np.exp2(np.maximum(0.0, np.ceil(np.log2(std / 4.0))))
        cell = np.minimum(cell, max(widest, 1.0)).astype(np.int64)
        reach = POSTERIOR_CELLS * cell + cell // 2  # the window: c - reach .. c + reach - (f > 1)
        fits = reach <= self.max_index
        centre = np.clip(np.round(mean), -self.max_index + reach, self.max_index - reach + (cell > 1))
        return np.where(fits, cell, 0), np.where(fits, centre, 0).astype(np.int64)

    @staticmethod
    def _within_table(f, mean, std):
        """(n, f): Q over the f bins of a cell, -f/2 .. f/2 - 1 relative to its centre bin,
        proportional to the density at the bins (f > 1 only where std > 4 bins: within 1e-3 of
        the integral over the bin). numpy float64: the decoder rebuilds it bit for bit.
        (``QuantizedGaussian`` would not do: it piles the mass outside its range onto its first
        and last bins.)"""
        offsets = np.arange(-(f // 2), f - f // 2, dtype=np.float64)
        log_density = -0.5 * np.square((offsets - mean[:, None]) / std[:, None])
        return np.exp(log_density - np.max(log_density, axis=1, keepdims=True))

    def _pop_posterior(self, ans, mean, std):
        """Decode one group's bins (flat) under Q = N(mean, std^2) (in bins) from ``ans``: per cell
        width (ascending), the cells under Q integrated over each cell, then the bins under Q
        clipped to the cell. The inverse of ``_push_posterior``."""
        cells, centres = self._windows(mean, std)
        symbols = np.zeros(mean.shape, np.int64)
        for f in np.unique(cells):
            at = np.flatnonzero(cells == f)
            m, s, c = mean[at], std[at], centres[at]
            if f == 0:
                symbols[at] = ans.decode(self.latent_family, m, s)
                continue
            a = ans.decode(self._cells, (m - c + _cell_shift(f)) / f, s / f).astype(np.int64)
            b = ans.decode(self.categorical, self._within_table(f, m - c - a * f, s)) - f // 2 if f > 1 else 0
            symbols[at] = c + a * f + b
        return symbols.astype(np.int32)

    def _push_posterior(self, ans, symbols, mean, std):
        """Encode one group's bins under Q: ``_pop_posterior`` undone, in the reverse order."""
        cells, centres = self._windows(mean, std)
        for f in np.unique(cells)[::-1]:
            at = np.flatnonzero(cells == f)
            m, s, c, i = mean[at], std[at], centres[at], symbols[at].astype(np.int64)
            if f == 0:
                ans.encode_reverse(i.astype(np.int32), self.latent_family, m, s)
                continue
            a = np.floor_divide(i - c + f // 2, f)
            if f > 1:
                within = (i - c - a * f + f // 2).astype(np.int32)
                ans.encode_reverse(within, self.categorical, self._within_table(f, m - c - a * f, s))
            ans.encode_reverse(a.astype(np.int32), self._cells, (m - c + _cell_shift(f)) / f, s / f)

    # ---- the top group under its (mixture) prior

    def _component_posterior(self, symbols, means, stds):
        """P(k | z) proportional to pi_k prod_d N(z_d; mu_kd, sigma_kd^2), numpy float64, fixed order."""
        weights, _, _ = self._top(symbols.size)
        z = symbols.astype(np.float64)[None]
        log_joint = np.log(weights[0]) - np.sum(0.5 * np.square((z - means) / stds) + np.log(stds), axis=1)
        return np.exp(log_joint - log_joint.max())[None]

    def _push_top(self, ans, symbols):
        """Push the wave's top groups (tiles, dims) under the top prior (a mixture: tile by tile,
        the last first, each with bits back over its component)."""
        weights, means, stds = self._top(symbols.shape[1])
        if weights.shape[1] == 1:
            tiles = len(symbols)
            ans.encode_reverse(symbols.ravel(), self.latent_family, np.tile(means[0], tiles), np.tile(stds[0], tiles))
            return
        for tile_symbols in symbols[::-1]:
            k = int(ans.decode(self.categorical, self._component_posterior(tile_symbols, means, stds))[0])
            ans.encode_reverse(tile_symbols, self.latent_family, means[k], stds[k])
            ans.encode_reverse(np.array([k], np.int32), self.categorical, weights)

    def _pop_top(self, ans, tiles, size):
        weights, means, stds = self._top(size)
        if weights.shape[1] == 1:
            return ans.decode(self.latent_family, np.tile(means[0], tiles), np.tile(stds[0], tiles)).reshape(tiles, size)
        popped = []
        for _ in range(tiles):
            k = int(ans.decode(self.categorical, weights)[0])
            symbols = ans.decode(self.latent_family, means[k], stds[k])
            posterior = self._component_posterior(symbols, means, stds)
            ans.encode_reverse(np.array([k], np.int32), self.categorical, posterior)
            popped.append(symbols)
        return np.stack(popped)

    # ---- waves

    def _mean_bins(self, mean):
        return np.clip(np.round(mean), -self.max_index, self.max_index).astype(np.int32)

    def _push_given(self, ans, tiles, valid_hw, bins, priors, out):
        """Push a wave's pixels under P(x | z), then its groups under their priors, the top last."""
        pixels = _PixelCoder(self.model.likelihood, out, valid_hw, self.chunk, tiles.shape[-1], self.categorical)
        pixels.push(ans, tiles[:, : valid_hw[0], : valid_hw[1]].reshape(-1, tiles.shape[-1]).astype(np.int32))
        for g in reversed(range(1, len(bins))):
            ans.encode_reverse(bins[g].ravel(), self.latent_family, *(a.ravel() for a in priors[g]))
        self._push_top(ans, bins[0].reshape(len(tiles), -1))

    def push_waves(self, jobs, valid_hw):
        """Code waves of tiles of one shape with bits back, each onto its own stack, the networks
        running on all of them together: ``jobs`` a list of (ans, padded tiles (n, h, w, C) uint8
        whose first ``valid_hw`` rows and columns are image; the rest is edge padding, rebuilt by
        the decoder, not coded). Per job, its pops (every group of every tile, on a clone of its
        stack), then its pixels and priors: returns per job the stack to go on with (a new object)
        and the bits its pops took, or None where the stack cannot fund the pops with
        ``POP_RESERVE_BITS`` to spare (the job is not coded; its stack untouched)."""
        tiles = np.concatenate([np.asarray(t) for _, t in jobs])
        padded_hw = tuple(tiles.shape[1:3])
        bounds = np.cumsum([0] + [len(t) for _, t in jobs])
        calls = _job_calls([len(t) for _, t in jobs])
        trials = [None if ans.is_empty() else ans.clone() for ans, _ in jobs]
        priors = [None] * len(self._group_shapes(padded_hw))

        def choose(g, posterior, prior):
            priors[g] = prior
            mean, std = posterior
            bins = self._mean_bins(mean)  # what a job whose pops failed walks on (then dropped)
            for k, trial in enumerate(trials):
                if trial is not None:
                    at = slice(bounds[k], bounds[k + 1])
                    popped = self._pop_posterior(trial, mean[at].ravel(), std[at].ravel())
                    bins[at] = popped.reshape(bins[at].shape)
                    if trial.num_valid_bits() < POP_RESERVE_BITS:
                        trials[k] = None
            return None if all(trial is None for trial in trials) else bins

        walked = self._walk(padded_hw, self._features(tiles, calls), calls, choose)
        results = []
        for k, (trial, (ans, job_tiles)) in enumerate(zip(trials, jobs)):
            if walked is None or trial is None:
                results.append(None)
                continue
            at = slice(bounds[k], bounds[k + 1])
            popped_bits = ans.num_valid_bits() - trial.num_valid_bits()
            bins, out = [b[at] for b in walked[0]], walked[1][at]
            job_priors = [None if p is None else [a[at] for a in p] for p in priors]
            self._push_given(trial, np.asarray(job_tiles), valid_hw, bins, job_priors, out)
            results.append((trial, popped_bits))
        return results

    def push(self, ans, tile, valid_hw, *, require_bits_back=False):
        """Code one padded tile ``(h, w, C)`` on its own (the networks at batch 1). Bits back when
        the stack holds enough for the pops, else the posterior means' bins; returns ``(ans,
        bits_back)``: the stack to go on with (a new object after bits back) and which. With
        ``require_bits_back`` a tile that cannot have bits back is not coded: returns ``(ans,
        None)``, ``ans`` untouched. ``self.popped_bits`` is what its pops took."""
        tiles = np.asarray(tile)[None]
        (coded,) = self.push_waves([(ans, tiles)], valid_hw)
        if coded is not None:
            ans, self.popped_bits = coded
            return ans, True
        self.popped_bits = 0
        if require_bits_back:
            return ans, None
        padded_hw, calls = tuple(tiles.shape[1:3]), network_calls(1)
        priors = [None] * len(self._group_shapes(padded_hw))

        def means(g, posterior, prior):
            priors[g] = prior
            return self._mean_bins(posterior[0])

        bins, out = self._walk(padded_hw, self._features(tiles, calls), calls, means)
        self._push_given(ans, tiles, valid_hw, bins, priors, out)
        return ans, False

    def pop(self, ans, padded_hw, valid_hw, bits_back, tiles=1):
        """Decode what ``push`` (one tile) or ``push_waves`` (a job of ``tiles`` tiles) coded:
        the padded ``(tiles, h, w, C)`` uint8 tiles (edge padding rebuilt)."""
        padded_hw = tuple(padded_hw)
        shapes = self._group_shapes(padded_hw)
        channels = self.model.data_shape[-1]
        calls = network_calls(tiles)
        top = self._pop_top(ans, tiles, int(np.prod(shapes[0][1:])))

        def choose(g, posterior, prior):
            return top if g == 0 else ans.decode(self.latent_family, *(a.ravel() for a in prior))

        steps_seen = []
        bins, out = self._walk(padded_hw, None, calls, choose, steps_seen)
        x_all = np.zeros((tiles * valid_hw[0] * valid_hw[1], channels), np.int32)
        _PixelCoder(self.model.likelihood, out, valid_hw, self.chunk, channels, self.categorical).pop(ans, x_all)
        valid = x_all.reshape(tiles, *valid_hw, channels)
        pad = ((0, 0), (0, padded_hw[0] - valid_hw[0]), (0, padded_hw[1] - valid_hw[1]), (0, 0))
        decoded = np.pad(valid, pad, mode="edge").astype(np.uint8)
        if bits_back:
            posteriors = self._posteriors(self._features(decoded, calls), calls, steps_seen)
            for g in reversed(range(len(shapes))):
                self._push_posterior(ans, bins[g].ravel(), *(a.ravel() for a in posteriors[g]))
        return decoded
