"""The likelihoods that factorize over sub-pixels: p(x_ij | z) = prod_c p(x_ijc | z), no context.

The decoder gives ``params_per_subpixel`` numbers for each sub-pixel (its last axis);
``subpixel_log_prob`` is elementwise and a pixel's ``log_prob`` the sum over its channels.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions as dist
from vae_jax.likelihoods import logistic
from vae_jax.likelihoods.contract import LikelihoodBase, register
from vae_jax.likelihoods.logistic import MAX_LOGISTIC_LOG_SCALE, MIN_LOGISTIC_LOG_SCALE

# A learned Gaussian variance between e^-12 and e^6, far beyond what 8-bit data in [0, 1] needs.
GAUSSIAN_LOG_VAR_RANGE = (-12.0, 6.0)


class PerSubpixel(LikelihoodBase):
    """What every likelihood that factorizes over sub-pixels shares."""

    def params_shape(self, data_shape):
        """The decoder's output per example: ``(*data_shape, params_per_subpixel)``."""
        return (*data_shape, self.params_per_subpixel)

    def log_prob(self, x, out):
        """log p(x_ij | z) = sum_c log p(x_ijc | z): (..., H, W, C) -> (..., H, W)."""
        return jnp.sum(self.subpixel_log_prob(x, out), axis=-1)

    def known_log_prob(self, x, out, known):
        """sum over the known channels c of log p(x_ijc | z): a sub-pixel reads nothing else."""
        return jnp.sum(jnp.where(known, self.subpixel_log_prob(x, out), 0.0), axis=-1)

    def log_prob_sum(self, x, out, event_ndim):
        """log p(x|z) = sum_d log p(x_d | z) over the last ``event_ndim`` axes of ``x``.

        Evaluated on the data flattened to one axis of D sub-pixels: the values are the same,
        and the elementwise math runs along one long contiguous axis, which XLA:CPU vectorizes
        (a (28, 28, 1) layout, minor axis of size 1, it does not).
        """
        lead = x.shape[: x.ndim - event_ndim]
        x_flat = jnp.reshape(x, (*lead, -1))
        out_flat = jnp.reshape(out, (*lead, x_flat.shape[-1], out.shape[-1]))
        return jnp.sum(self.subpixel_log_prob(x_flat, out_flat), axis=-1)


@register("bernoulli")
@dataclasses.dataclass(frozen=True)
class Bernoulli(PerSubpixel):
    """x in {0, 1}; the decoder gives one logit per sub-pixel."""

    input_kind = "binary"
    params_per_subpixel = 1

    def subpixel_log_prob(self, x, out):
        return dist.bernoulli_log_prob(x, out[..., 0])

    def mean(self, out):
        return jax.nn.sigmoid(out[..., 0])

    def sample(self, out, key):
        return jax.random.bernoulli(key, jax.nn.sigmoid(out[..., 0])).astype(jnp.float32)


@register("gaussian")
@dataclasses.dataclass(frozen=True)
class Gaussian(PerSubpixel):
    """N(x; mean, var) on x in [0, 1] (``support="unit"``: images) or on any reals (``"real"``).

    ``obs_var`` fixed (a float): the decoder gives the mean only. ``obs_var=None``: the
    decoder also gives a per-sub-pixel log-variance, learned with the rest.
    """

    obs_var: float | None = None
    support: str = "unit"

    def __post_init__(self):
        if self.obs_var is not None and not self.obs_var > 0:
            raise ValueError(f"Gaussian obs_var must be a positive float or None, got {self.obs_var!r}")
        if self.support not in ("unit", "real"):
            raise ValueError(f"Gaussian support must be 'unit' or 'real', got {self.support!r}")

    @property
    def input_kind(self):
        return self.support

    @property
    def params_per_subpixel(self):
        return 1 if self.obs_var is not None else 2

    def log_var(self, out):
        if self.obs_var is not None:
            return jnp.full(out.shape[:-1], math.log(self.obs_var), out.dtype)
        return jnp.clip(out[..., 1], *GAUSSIAN_LOG_VAR_RANGE)

    def subpixel_log_prob(self, x, out):
        return dist.diag_gaussian_log_prob(x, out[..., 0], self.log_var(out))

    def mean(self, out):
        return out[..., 0]

    def sample(self, out, key):
        return dist.diag_gaussian_sample(out[..., 0], self.log_var(out), key)


class IndependentChannels(PerSubpixel):
    """A discrete likelihood that factorizes over sub-pixels, channels included: each sub-pixel's
    table is its own distribution, and a coder may code them in any order."""

    def channel_log_probs(self, x, out):
        """log P(x_c = v) for every sub-pixel and value v = 0..255: (..., C, 256). ``x`` is not
        read (each channel is independent of the others); it is there to match the coupled
        likelihood, whose conditionals need the previous channels."""
        del x
        return self.subpixel_log_prob(jnp.arange(256, dtype=jnp.float32), out[..., None, :])

    def coding_tables(self, out, tile_height=None):
        """Sub-pixel c of each pixel: ``subpixel_table`` (its class's: parameters (n, P) -> (n, 256)
        probabilities) of its own parameters."""
        rows = logistic.raster_rows(out)
        return lambda indices, x_all, channel: self.subpixel_table(rows[indices][:, channel])


@register("logistic")
@dataclasses.dataclass(frozen=True)
class DiscretizedLogistic(IndependentChannels):
    """x in {0..255}; a logistic on the [-1, 1] bin-centre scale, discretized to 256 bins."""

    input_kind = "discrete"
    params_per_subpixel = 2

    def _split(self, out):
        return out[..., 0], jnp.clip(out[..., 1], MIN_LOGISTIC_LOG_SCALE, MAX_LOGISTIC_LOG_SCALE)

    def subpixel_log_prob(self, x, out):
        mean, log_scale = self._split(out)
        return dist.discretized_logistic_log_prob(x, mean, log_scale)

    def mean(self, out):
        return jnp.clip((out[..., 0] + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, out, key):
        mean, log_scale = self._split(out)
        return dist.to_8bit(dist.logistic_sample(mean, log_scale, key))

    @staticmethod
    def subpixel_table(rows):
        """(n, 2) mean, log-scale -> (n, 256)."""
        return logistic.logistic_bins(rows[:, 0], rows[:, 1])


@register("dlm")
@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticMixture(IndependentChannels):
    """x in {0..255}; a K-component discretized logistic mixture per sub-pixel.

    The decoder gives ``3 K`` numbers per sub-pixel: K mixture logits, K means, K log-scales.
    """

    num_components: int = 10
    input_kind = "discrete"

    def __post_init__(self):
        if not (isinstance(self.num_components, int) and self.num_components >= 1):
            raise ValueError(f"num_components must be a positive int, got {self.num_components!r}")

    @property
    def params_per_subpixel(self):
        return 3 * self.num_components

    def _split(self, out):
        logits, means, log_scales = jnp.split(out, 3, axis=-1)
        return logits, means, jnp.clip(log_scales, MIN_LOGISTIC_LOG_SCALE, MAX_LOGISTIC_LOG_SCALE)

    def subpixel_log_prob(self, x, out):
        return dist.discretized_logistic_mixture_log_prob(x, *self._split(out))

    def mean(self, out):
        logits, means, _ = self._split(out)
        centre = jnp.sum(jax.nn.softmax(logits, axis=-1) * means, axis=-1)
        return jnp.clip((centre + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, out, key):
        logits, means, log_scales = self._split(out)
        component_key, value_key = jax.random.split(key)
        component = jax.random.categorical(component_key, logits, axis=-1)
        pick = lambda a: jnp.take_along_axis(a, component[..., None], axis=-1)[..., 0]
        return dist.to_8bit(dist.logistic_sample(pick(means), pick(log_scales), value_key))

    @staticmethod
    def subpixel_table(rows):
        """(n, 3K) logits, means, log-scales -> (n, 256)."""
        return logistic.mixture_bins(*np.split(rows, 3, axis=-1))
