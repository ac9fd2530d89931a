"""The local autoregressive mixtures: the channel-coupled mixture whose means also read the pixel's
causal neighbours (``context.CAUSAL_NEIGHBOURS``), so that p(x | z) is autoregressive with a
reach of one pixel. Log-probabilities are parallel; sampling, the mean and decoding run one
wavefront 2i + j at a time.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.likelihoods import logistic
from vae_jax.likelihoods.context import (
    CAUSAL_NEIGHBOURS,
    CROSS_CHANNEL_PAIRS,
    Context,
    causal_neighbour_centres,
    wavefront,
)
from vae_jax.likelihoods.contract import register
from vae_jax.likelihoods.coupled import CoupledLogisticMixture, coupled_table


@register("local")
@dataclasses.dataclass(frozen=True)
class LocalAutoregressiveMixture(CoupledLogisticMixture):
    """x in {0..255}^(H x W x 3): the channel-coupled mixture whose component means also move
    linearly with the actual values of the pixel's left, up, up-left and up-right neighbours, each channel
    with its own (a learned, context-dependent version of the predictors PNG and JPEG-LS use; the
    local autoregressive decoder of the variational lossy autoencoder, Chen et al. 2017, with a
    receptive field of one pixel so that everything beyond the neighbours must come through z):

      p(x | z) = prod_{i,j} p_coupled(x_ij | z; mu_ck = m_ck + sum_n a_nck x_c(n)),

    n over the four causal neighbours of (i, j) (0 outside the image), m and the coefficients
    a = tanh(.) from the decoder, and p_coupled the channel-coupled mixture above.
    Given the neighbours each pixel is a ``CoupledLogisticMixture`` pixel, so its log-probability,
    channel conditionals and samples are that likelihood's, with the shifted means. The decoder
    gives ``22 K`` numbers per pixel: the coupled mixture's ``10 K``, then ``12 K`` neighbour
    coefficients, (neighbour, channel, component). Sampling and the mean run one wavefront at a
    time (``wavefront``), 2 H + W - 2 steps.
    """

    num_components: int = 5
    context = Context(earlier_channels=True, neighbours=CAUSAL_NEIGHBOURS)

    def params_shape(self, data_shape):
        if len(data_shape) != 3 or data_shape[-1] != 3:
            raise ValueError(f"data_shape: the local autoregressive mixture models (H, W, 3) images, got {data_shape}")
        return (*data_shape[:-1], 22 * self.num_components)

    def as_coupled(self, x, out):
        """The ``CoupledLogisticMixture`` parameters of every pixel given its neighbours' actual
        values in x (..., H, W, 3) (only the neighbours are read): (..., H, W, 10K)."""
        k = self.num_components
        shift = self._neighbour_shift(causal_neighbour_centres(x), out)  # (..., 3 channels, k)
        means = out[..., k : 4 * k] + shift.reshape(*shift.shape[:-2], 3 * k)
        return jnp.concatenate([out[..., :k], means, out[..., 4 * k : 10 * k]], axis=-1)

    def _neighbour_shift(self, centres, out):
        """sum_n a_nck x_c(n): (..., 3 channels, K), from the neighbours' centres (..., 3, 4)."""
        k = self.num_components
        coefficients = jnp.tanh(out[..., 10 * k : 22 * k].reshape(*out.shape[:-1], len(CAUSAL_NEIGHBOURS), 3, k))
        return jnp.einsum("...nck,...cn->...ck", coefficients, centres)  # coefficients (n, c, k)

    def log_prob(self, x, out):
        """log p(x_ij | z, x_<ij) per pixel: x (..., H, W, 3), out (..., H, W, 22K) -> (..., H, W)."""
        return super().log_prob(x, self.as_coupled(x, out))

    def log_prob_sum(self, x, out, event_ndim):
        """log p(x | z), the sum of ``log_prob`` over the image's pixels."""
        if event_ndim != 3:
            raise ValueError(f"event_ndim: the local autoregressive mixture scores whole (H, W, 3) images, got {event_ndim}")
        return jnp.sum(self.log_prob(x, out), axis=(-2, -1))

    def channel_log_probs(self, x, out):
        """log P(x_ijc = v | x_ij,<c, neighbours) for every pixel, channel and value: (..., H, W, 3, 256).
        A pixel's row reads only its neighbours and its own earlier channels in x."""
        return super().channel_log_probs(x, self.as_coupled(x, out))

    def _wavefront(self, out, draw):
        """Fill the image one wavefront at a time: pixel values on wavefront t are ``draw(coupled
        params given the values so far, t)`` (8-bit, or float bin values for the mean)."""
        height, width = out.shape[-3:-1]
        front = wavefront(height, width)[..., None]

        def step(t, values):
            drawn = draw(self.as_coupled(values, out), t)
            return jnp.where(front == t, drawn.astype(values.dtype), values)

        steps = 2 * height + width - 2
        return jax.lax.fori_loop(0, steps, step, jnp.zeros((*out.shape[:-1], 3), jnp.float32))

    def mean(self, out):
        """Each pixel's mixture mean given its neighbours' means, wavefront by wavefront, in [0, 1]."""
        parent = super().mean
        return self._wavefront(out, lambda coupled, t: parent(coupled) * 255.0) / 255.0

    def sample(self, out, key):
        """x ~ p(x | z), one wavefront at a time, each pixel R, then G, then B."""
        parent = super().sample
        return self._wavefront(out, lambda coupled, t: parent(coupled, jax.random.fold_in(key, t))).astype(jnp.int32)

    def coding_tables(self, out, tile_height=None):
        """Each pixel's coupled table with its means moved by its decoded neighbours in its own tile
        (``_WavefrontTables``)."""
        return _WavefrontTables(self, out, tile_height or out.shape[0])

    def coding_rows(self, out, tile_height=None):
        """The coupled-mixture rows of pixels given their decoded neighbours in their own tile
        (``CoupledLogisticMixture.coding_rows``; the neighbours must be in x_all)."""
        return _WavefrontTables(self, out, tile_height or out.shape[0]).neighbour_shifted

    def _coding_coefficients(self, rows):
        """NumPy: the neighbour coefficients a = tanh(.) (n, neighbour, channel, K) of rows (n, 22K) of
        the coding output (``coding_output`` took the tanh), and the earlier channels' ones (n,
        neighbour, pair, K): none here."""
        k = self.num_components
        return rows[:, 10 * k : 22 * k].reshape(-1, len(CAUSAL_NEIGHBOURS), 3, k), None




@register("local-cross")
@dataclasses.dataclass(frozen=True)
class CrossChannelLocalMixture(LocalAutoregressiveMixture):
    """The local autoregressive mixture whose G and B means also read the causal neighbours of the
    earlier channels (G those of R; B those of R and G):

      mu_ck = m_ck + sum_n a_nck x_c(n) + sum_{c' < c} sum_n d_nc'ck x_c'(n),

    the rest as in ``LocalAutoregressiveMixture``. Why: a photograph's colour channels share their
    edges, so the best linear predictor of G is close to G's left neighbour plus R's step from
    its own left neighbour to this pixel (x_G(left) + x_R - x_R(left)), which needs R's
    neighbours; the least-squares start of each likelihood on the held-out ``chelsea``, no
    latent (``python -m benchmarks.predictors``), costs 4.46 bits/dim with the local mixture's
    context and 3.38 with this one's. The decoder gives ``34 K`` numbers per pixel: the local
    mixture's ``22 K``, then ``12 K`` cross coefficients d = tanh(.), (neighbour, pair,
    component), the pairs in ``CROSS_CHANNEL_PAIRS`` order. Every term reads only neighbours on
    earlier wavefronts, so decoding and sampling run as for the local mixture.
    """

    context = Context(earlier_channels=True, neighbours=CAUSAL_NEIGHBOURS, earlier_channel_neighbours=CROSS_CHANNEL_PAIRS)

    def params_shape(self, data_shape):
        local = super().params_shape(data_shape)
        return (*local[:-1], 34 * self.num_components)

    def _neighbour_shift(self, centres, out):
        """The local mixture's shift plus sum_{c' < c} sum_n d_nc'ck x_c'(n): (..., 3, K)."""
        k = self.num_components
        coefficients = jnp.tanh(out[..., 22 * k :].reshape(*out.shape[:-1], len(CAUSAL_NEIGHBOURS), 3, k))  # (n, p, k)
        sources = jnp.stack([centres[..., source, :] for source, _ in CROSS_CHANNEL_PAIRS], axis=-2)  # (..., p, n)
        per_pair = jnp.einsum("...npk,...pn->...pk", coefficients, sources)
        # R reads no earlier channel; G reads R (pair 0); B reads R and G (pairs 1 and 2).
        cross = jnp.stack([jnp.zeros_like(per_pair[..., 0, :]), per_pair[..., 0, :], per_pair[..., 1, :] + per_pair[..., 2, :]], axis=-2)
        return super()._neighbour_shift(centres, out) + cross


    def _coding_coefficients(self, rows):
        """NumPy: the local mixture's, and the cross coefficients d = tanh(.) (n, neighbour, pair, K)."""
        k = self.num_components
        own, _ = super()._coding_coefficients(rows)
        return own, rows[:, 22 * k : 34 * k].reshape(-1, len(CAUSAL_NEIGHBOURS), 3, k)


class _WavefrontTables:
    """A local mixture's tables over a tile (``coding_tables``): each pixel's coupled table, its
    component means moved by its neighbours' decoded values (0 outside the tile). A wavefront's
    channels share its neighbours (all on earlier wavefronts), so its moved rows and each channel's
    component tables are computed once for all three. ``out`` may hold tiles of ``tile_height``
    rows stacked one under the other; a tile's top row has no neighbours above."""

    def __init__(self, likelihood, out, tile_height):
        self.likelihood, self.width, self.rows = likelihood, out.shape[1], logistic.raster_rows(out)
        self.tile_height = tile_height
        self._front = None  # (wavefront, its moved rows, its channels' component tables)
        # The coefficients and the coupled rows apart, so that a wavefront gathers only what it returns.
        self._coefficients = likelihood._coding_coefficients(self.rows)
        self._coupled = np.ascontiguousarray(self.rows[:, : 10 * likelihood.num_components])

    def __call__(self, indices, x_all, channel):
        front = (int(indices[0]), len(indices))
        if self._front is None or self._front[0] != front:
            self._front = (front, self.neighbour_shifted(indices, x_all), {})
        _, shifted, component_bins = self._front
        return coupled_table(shifted, x_all[indices], channel, self.likelihood.num_components, component_bins)

    def _neighbours_of(self, indices):
        """(n, neighbours) raster indices of the pixels' causal neighbours (0 where outside the
        tile) and whether each lies inside it."""
        offsets = np.array(self.likelihood.context.neighbours)  # (neighbours, 2): dy, dx
        i, j = np.divmod(indices, self.width)
        row, column = (i % self.tile_height)[:, None] + offsets[:, 0], j[:, None] + offsets[:, 1]
        inside = (row >= 0) & (row < self.tile_height) & (column >= 0) & (column < self.width)
        return np.where(inside, (i[:, None] + offsets[:, 0]) * self.width + column, 0), inside

    def neighbour_shifted(self, indices, x_all):
        """The rows of ``indices`` as coupled rows (n, 10K): each channel's component means plus
        tanh(a_nck) times its neighbours' bin centres, and plus tanh(d_npk) times the neighbours'
        centres of the earlier channel of each pair the context reads."""
        k = self.likelihood.num_components
        rows = self._coupled[indices]
        coefficients, cross_coefficients = (None if a is None else a[indices] for a in self._coefficients)
        pairs = self.likelihood.context.earlier_channel_neighbours
        neighbour, inside = self._neighbours_of(indices)
        all_centres = np.where(inside[..., None], logistic.centres(x_all[neighbour, :3]), 0.0)  # (n, neighbours, 3)
        means = rows[:, k : 4 * k].reshape(-1, 3, k)
        for n in range(neighbour.shape[1]):
            centres = all_centres[:, n]
            means = means + coefficients[:, n] * centres[:, :, None]
            for p, (source, target) in enumerate(pairs):
                means[:, target] = means[:, target] + cross_coefficients[:, n, p] * centres[:, source, None]
        rows[:, k : 4 * k] = means.reshape(-1, 3 * k)
        return rows
