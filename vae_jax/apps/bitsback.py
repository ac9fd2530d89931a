"""Bits-back ANS coding of one image tile with every latent group of a model.

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
- pixels: each sub-pixel a categorical over its 256 values, the likelihood's own table of it
  (``coding_tables`` of a ``likelihoods.DiscreteLikelihood``: the channel-coupled mixture's R,
  G | R, B | R, G, its component weights updated by the channels seen; independent ones per
  channel), quantized by ``constriction.stream.model.Categorical(perfect=False)``, in the
  likelihood's ``coding_order``, which follows from what each pixel reads (its ``context``):
  pixels that read no neighbour ``chunk_pixels`` at a time, channel by channel, so memory is
  bounded for any tile; the local mixtures' pixels, which read their left, up, up-left and
  up-right neighbours, one wavefront 2i + j of the tile at a time (2h + w - 2 steps, h in a tile
  one pixel wide; each R, G, B), the tables of a step built from the values the steps before it
  decoded. The encoder pushes the steps in the reverse order. Neighbours never cross a tile's
  border (the likelihood sees each tile as an image).

Reproducible probabilities: the decoder must rebuild the encoder's probabilities bit for bit.

- Every parameter a distribution is built from is snapped to a fixed grid first: latent means
  and standard deviations to multiples of 2**-LATENT_GRID_LOG2 of a bin, the decoder's output
  (the likelihood's means, log-scales, mixture logits, coupling coefficients) to multiples of
  2**-OUTPUT_GRID_LOG2. A network whose output moves by a few float32 ulps (another fusion,
  eager execution, another batch layout) then almost always gives the very same snapped value.
- The 256-value tables are computed in numpy float64 from the snapped parameters, each pixel's
  alone (``likelihoods.logistic``: the logistic CDF at the 255 bin edges, differenced, the
  mixture components added in order), and so is the top prior's component posterior: no compiler
  sits between the encoder's numbers and the decoder's, and the chunking cannot change them.
  (Computing them with XLA, even in float64, differed between a jitted and an eager run: the
  likelihoods place the bin centres in float32, which XLA rounds differently fused.)
- Group g's statistics come from one compiled step (``_ladder_to_group``: the model's
  ``top_down_to_group``) of (features, the model's top-down state after group g - 1), the state
  from another (``_ladder_merge``: ``top_down_merge``) of the groups' bins: the encoder's
  pops, its pushes under the priors and the decoder's pops and pushes run the same steps on the
  same bins, so encoder and decoder evaluate identical programs on identical inputs, and a tile
  costs one top-down pass (``TileCoder._walk``).

What remains: a snapped value can still flip where the network's output sits within an ulp of
a grid point, and a different backend or library version may round the networks differently;
decode on the platform that encoded (a flip decodes garbage from there on, which the file's
checksum of the image, ``compression.image_checksum``, or the coder itself refuses loudly).
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax.errors import FlaxError

from vae_jax.model import HierarchicalModel, as_latent, latent_groups
from vae_jax.priors import StandardNormal

LATENT_GRID_LOG2 = 8  # latent means / stds (in bins) are multiples of 1/256 of a bin
OUTPUT_GRID_LOG2 = 12  # the likelihood's parameters are multiples of 2**-12
# Q's window: 2 POSTERIOR_CELLS + 1 cells around the posterior mean, each under std / 2 bins wide
POSTERIOR_CELLS = 32
# A tile takes bits back only if its pops leave this many bits on the stack (module docstring).
POP_RESERVE_BITS = 32
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
def fully_convolutional(model) -> bool:
    """Whether the same params code tiles of other sizes: the networks run on a (2H, 2W) image
    and the prior is the standard normal (a learned mixture's components have the training
    latent's shape)."""
    if not isinstance(model.prior, StandardNormal):
        return False
    height, width, channels = model.data_shape
    params = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, 2 * height, 2 * width, channels), jnp.int32)
    try:
        mean, _ = jax.eval_shape(model.posterior, params, x)
        out = jax.eval_shape(model.decoder_output, params, mean)
    except (TypeError, ValueError, FlaxError):  # a dense layer is tied to the training size
        return False
    return tuple(out.shape[1:3]) == (2 * height, 2 * width)


@functools.lru_cache(maxsize=256)
def _group_shapes(model, padded_hw):
    """The latent groups' shapes for a padded tile: the model's alone, not its params' values, so
    cached across coders (tracing the posterior takes a tenth of a second per tile shape)."""
    params = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, *padded_hw, model.data_shape[-1]), jnp.int32)
    mean, _ = jax.eval_shape(model.posterior, params, x)
    return tuple(g.shape for g in latent_groups(mean))


def tile_unit(model):
    """(uh, uw): a tile's padded sides are multiples of it (the whole ``data_shape`` for a model
    tied to its training size)."""
    return _sizes(model) if fully_convolutional(model) else tuple(model.data_shape[:2])


# ---------------------------------------------------------------- jitted model pieces


def _snap(values, grid_log2):
    """``values`` rounded to multiples of 2**-grid_log2 (exact: scaling by a power of two)."""
    return jnp.round(values * 2.0**grid_log2) * 2.0**-grid_log2


def _in_bins(mean, log_var, bin_log2):
    """(mean / w, std / w) flattened and snapped; std at least one grid step."""
    std = jnp.exp(0.5 * jnp.clip(log_var, -60.0, 60.0))
    step = 2.0**-LATENT_GRID_LOG2
    return (
        _snap(jnp.ravel(mean) * 2.0**bin_log2, LATENT_GRID_LOG2),
        jnp.maximum(_snap(jnp.ravel(std) * 2.0**bin_log2, LATENT_GRID_LOG2), step),
    )


@partial(jax.jit, static_argnums=0)
def _posterior_inputs(model, params, tile):
    """What the posteriors read of x (1, H, W, C): a ``HierarchicalModel``'s bottom-up features,
    or a one-group model's q(z | x) itself."""
    if _steps_top_down(model):
        return model.bottom_up_features(params, tile)
    return model.posterior(params, tile)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ladder_to_group(model, bin_log2, g, tile_hw, params, features, state):
    """Group g from the top-down ``state`` after group g - 1's merge (None: the start, for a tile
    of ``tile_hw``, in the same program as the top group's statistics): Q(z_g | x, z_<g) and, for
    g > 0, P(z_g | z_<g), on the bin-index scale and snapped, and the model's step state to merge into."""
    if state is None:
        state = model.top_down_start(params, 1, tile_hw)
    step, prior, posterior = model.top_down_to_group(params, state, features, g)
    return step, _in_bins(*posterior, bin_log2), None if prior is None else _in_bins(*prior, bin_log2)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _ladder_merge(model, bin_log2, g, params, step, bins):
    """The top-down state after group g's merge of z_g = w * bins."""
    return model.top_down_merge(params, step, bins.astype(jnp.float32) * 2.0**-bin_log2, g)


@partial(jax.jit, static_argnums=0)
def _ladder_output(model, params, state):
    """P(x | z)'s parameters, snapped, from the state after the last group: ``(H, W, ...)``."""
    return _snap(model.top_down_output(params, state)[0], OUTPUT_GRID_LOG2)


_posterior_in_bins = jax.jit(_in_bins, static_argnums=2)


@partial(jax.jit, static_argnums=(0, 1))
def _decoder_output(model, bin_log2, params, bins):
    """P(x | z)'s parameters at z = w * bins, snapped: ``(H, W, ...)``."""
    z = as_latent(b.astype(jnp.float32) * 2.0**-bin_log2 for b in bins)
    return _snap(model.decoder_output(params, z)[0], OUTPUT_GRID_LOG2)


@partial(jax.jit, static_argnums=(0, 1))
def _top_prior(model, bin_log2, params):
    """The top prior's components: snapped logits (K,), means and stds in bins (K, L)."""
    components = model.prior_components(params)
    k = components.means.shape[0]
    means, stds = jax.vmap(lambda m, v: _in_bins(m, v, bin_log2))(
        components.means.reshape(k, -1), components.log_vars.reshape(k, -1)
    )
    return _snap(components.logit_weights, OUTPUT_GRID_LOG2), means, stds


class _PixelTables:
    """The likelihood's 256-value tables over the valid pixels of one tile and the order the
    decoder reads sub-pixels in (``schedule``: steps (pixel indices, channel); the encoder pushes
    them in reverse), both the likelihood's own (``coding_tables``, ``coding_order``): NumPy
    float64 from the snapped decoder output, so that the decoder rebuilds them bit for bit."""

    def __init__(self, likelihood, out, valid_hw, chunk, channels):
        valid_h, valid_w = valid_hw
        self.schedule = likelihood.coding_order((valid_h, valid_w), channels, chunk)
        self._tables = likelihood.coding_tables(np.asarray(out[:valid_h, :valid_w], np.float64))

    def __call__(self, indices, x_all, channel):
        """(n, 256) float64: P(x_c = v | z, what it reads) for the valid pixels ``indices`` (raster
        order), c = ``channel``; x_all (pixels, C) holds every value these read."""
        table = self._tables(indices, x_all, channel)
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
    """The entropy models of one (model, params, latent grid): codes a tile onto an ANS stack.

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
        self._blank, self._prior = {}, {}

    # ---- shapes and cached pieces per padded tile shape

    def _group_shapes(self, padded_hw):
        return _group_shapes(self.model, tuple(padded_hw))

    def _top(self, size):
        """The top prior over a top group of ``size`` dims: (pi unnormalized, means, stds)."""
        if size not in self._prior:
            if isinstance(self.model.prior, StandardNormal):  # any size: N(0, 1) is w^-1 bins wide
                logits, means, stds = np.zeros(1), np.zeros((1, size)), np.full((1, size), 2.0**self.bin_log2)
            else:
                logits, means, stds = _checked(_top_prior(self.model, self.bin_log2, self.params))
                if means.shape[1] != size:
                    raise ValueError(f"model.prior: its components have {means.shape[1]} dims, the tile's z_1 {size}")
            self._prior[size] = (np.exp(logits - logits.max())[None], means, stds)
        return self._prior[size]

    def _walk(self, padded_hw, features, choose):
        """The groups of a tile of ``padded_hw`` top-down, one at a time: ``choose(g, posterior,
        prior)`` gets group g's statistics in bins (numpy; the top group's prior None: the
        model's) and returns z_g's bins, or None to stop. Returns the bins and the likelihood's
        parameters (numpy, snapped), or None if stopped. One top-down pass in all: the model's
        state is carried from group to group. The encoder and the decoder run the same compiled
        step of each group on the same bins, so they get the same numbers (the posteriors'
        features are a blank tile's where the decoder needs only the priors, which do not read
        them: the same program as the encoder's, not one without features)."""
        shapes = self._group_shapes(padded_hw)
        bins, state = [None] * len(shapes), None
        for g, shape in enumerate(shapes):
            step, posterior, prior = self._to_group(padded_hw, g, features, state)
            bins[g] = choose(g, _checked(posterior), None if prior is None else _checked(prior))
            if bins[g] is None:
                return None
            bins[g] = np.asarray(bins[g], np.int32).reshape(shape)
            state = self._merge(g, step, bins[g])
        return bins, np.asarray(self._output(state))

    # The compiled steps of the walk: a HierarchicalModel's top-down steps, or one group's whole
    # posterior (``_posterior_inputs`` computed it) and its decoder.

    def _to_group(self, padded_hw, g, features, state):
        if self.top_down:
            return _ladder_to_group(self.model, self.bin_log2, g, padded_hw, self.params, features, state)
        return None, _posterior_in_bins(*features, self.bin_log2), None

    def _merge(self, g, step, bins):
        if self.top_down:
            return _ladder_merge(self.model, self.bin_log2, g, self.params, step, bins)
        return bins

    def _output(self, state):
        if self.top_down:
            return _ladder_output(self.model, self.params, state)
        return _decoder_output(self.model, self.bin_log2, self.params, (state,))

    def _features(self, tile):
        return _posterior_inputs(self.model, self.params, jnp.asarray(tile, jnp.int32)[None])

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
        """Decode one group's bins under Q = N(mean, std^2) (in bins) from ``ans``: per cell width
        (ascending), the cells under Q integrated over each cell, then the bins under Q clipped to
        the cell. The inverse of ``_push_posterior``."""
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
        weights, means, stds = self._top(symbols.size)
        if weights.shape[1] == 1:
            ans.encode_reverse(symbols, self.latent_family, means[0], stds[0])
            return
        k = int(ans.decode(self.categorical, self._component_posterior(symbols, means, stds))[0])
        ans.encode_reverse(symbols, self.latent_family, means[k], stds[k])
        ans.encode_reverse(np.array([k], np.int32), self.categorical, weights)

    def _pop_top(self, ans, size):
        weights, means, stds = self._top(size)
        if weights.shape[1] == 1:
            return ans.decode(self.latent_family, means[0], stds[0])
        k = int(ans.decode(self.categorical, weights)[0])
        symbols = ans.decode(self.latent_family, means[k], stds[k])
        ans.encode_reverse(np.array([k], np.int32), self.categorical, self._component_posterior(symbols, means, stds))
        return symbols

    # ---- one tile

    def _posterior_path(self, ans, features, padded_hw):
        """z_1..z_G, each from Q(z_g | x, z_<g): decoded from ``ans`` (bits back) or, with ans None,
        the posterior mean's bin. Returns the bins, each group's prior (None for the top) and the
        likelihood's parameters at them, or None as soon as the pops leave fewer than
        ``POP_RESERVE_BITS`` on ``ans`` (the pops would read the stack's fixed start, not coded data)."""
        priors = [None] * len(self._group_shapes(padded_hw))

        def choose(g, posterior, prior):
            priors[g] = prior
            mean, std = posterior
            if ans is None:
                return np.clip(np.round(mean), -self.max_index, self.max_index).astype(np.int32)
            symbols = self._pop_posterior(ans, mean, std)
            return symbols if ans.num_valid_bits() >= POP_RESERVE_BITS else None

        walked = self._walk(padded_hw, features, choose)
        return None if walked is None else (walked[0], priors, walked[1])

    def push(self, ans, tile, valid_hw, *, require_bits_back=False):
        """Code one padded tile ``(h, w, C)`` uint8 whose first ``valid_hw`` rows and columns are
        image (the rest is edge padding, rebuilt by the decoder, not coded). Bits back when the
        stack holds enough for the pops, else the posterior means' bins; returns
        ``(ans, bits_back)``: the stack to go on with (a new object after bits back) and which.
        With ``require_bits_back`` a tile that cannot have bits back is not coded: returns
        ``(ans, None)``, ``ans`` untouched."""
        padded_hw = tuple(tile.shape[:2])
        features = self._features(tile)
        path = None
        if not ans.is_empty():
            trial = ans.clone()
            path = self._posterior_path(trial, features, padded_hw)
            if path is not None:
                ans = trial
        if path is None and require_bits_back:
            return ans, None
        bits_back = path is not None
        bins, priors, out = path if bits_back else self._posterior_path(None, features, padded_hw)
        tables = _PixelTables(self.model.likelihood, out, valid_hw, self.chunk, tile.shape[-1])
        x_all = tile[: valid_hw[0], : valid_hw[1]].reshape(-1, tile.shape[-1]).astype(np.int32)
        for indices, channel in reversed(tables.schedule):
            symbols = np.ascontiguousarray(x_all[indices, channel])
            ans.encode_reverse(symbols, self.categorical, tables(indices, x_all, channel))
        for g in reversed(range(1, len(bins))):
            ans.encode_reverse(bins[g].ravel(), self.latent_family, *priors[g])
        self._push_top(ans, bins[0].ravel())
        return ans, bits_back

    def pop(self, ans, padded_hw, valid_hw, bits_back):
        """Decode the tile ``push`` coded: the padded ``(h, w, C)`` uint8 tile (edge padding rebuilt)."""
        padded_hw = tuple(padded_hw)
        shapes = self._group_shapes(padded_hw)
        channels = self.model.data_shape[-1]
        # The priors do not read x; a blank tile's features stand in, through the same program.
        if padded_hw not in self._blank:
            self._blank[padded_hw] = self._features(np.zeros((*padded_hw, channels), np.int32))
        top = self._pop_top(ans, int(np.prod(shapes[0])))
        choose = lambda g, posterior, prior: top if g == 0 else ans.decode(self.latent_family, *prior)
        bins, out = self._walk(padded_hw, self._blank[padded_hw], choose)
        tables = _PixelTables(self.model.likelihood, out, valid_hw, self.chunk, channels)
        x_all = np.zeros((valid_hw[0] * valid_hw[1], channels), np.int32)
        for indices, channel in tables.schedule:  # each step reads only what the steps before it decoded
            x_all[indices, channel] = ans.decode(self.categorical, tables(indices, x_all, channel))
        valid = x_all.reshape(*valid_hw, channels)
        pad = ((0, padded_hw[0] - valid_hw[0]), (0, padded_hw[1] - valid_hw[1]), (0, 0))
        tile = np.pad(valid, pad, mode="edge").astype(np.uint8)
        if bits_back:
            posteriors = [None] * len(shapes)

            def known(g, posterior, prior):
                posteriors[g] = posterior
                return bins[g]

            self._walk(padded_hw, self._features(tile), known)
            for g in reversed(range(len(shapes))):
                self._push_posterior(ans, bins[g].ravel(), *posteriors[g])
        return tile
