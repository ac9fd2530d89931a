"""Observation models p(x | z): how a decoder's output becomes a distribution over pixels.

A decoder emits, for every sub-pixel, ``params_per_subpixel`` numbers (its last axis).
A likelihood turns those into per-sub-pixel log-probabilities, a displayable mean and a
sample. Each likelihood is a frozen, hashable dataclass so a model that holds one can be a
static argument of ``jax.jit``.

``input_kind`` says what the data must look like (see ``vae_jax.data.transforms.prepare``):
``"binary"`` {0, 1}; ``"unit"`` [0, 1] (for 8-bit images, uniformly dequantized, see the
bits/dim note in ``evaluation``); ``"real"`` any finite reals; ``"discrete"`` integers 0..255.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vae_jax import distributions as dist

# PixelCNN++ bounds the logistic log-scale from below: a narrower bin-width-relative scale
# only sharpens a distribution that already puts ~all its mass in one bin, and the bound
# keeps gradients finite early in training. The upper bound (a scale of e^5 ~ 150 times the
# whole [-1, 1] range, i.e. already flat) stops unused mixture components drifting to scales
# where every bin's probability underflows.
MIN_LOGISTIC_LOG_SCALE = -7.0
MAX_LOGISTIC_LOG_SCALE = 5.0
# A learned Gaussian variance between e^-12 and e^6, far beyond what 8-bit data in [0, 1] needs.
GAUSSIAN_LOG_VAR_RANGE = (-12.0, 6.0)


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """x in {0, 1}; the decoder gives one logit per sub-pixel."""

    input_kind = "binary"
    params_per_subpixel = 1

    def log_prob(self, x, out):
        return dist.bernoulli_log_prob(x, out[..., 0])

    def mean(self, out):
        return jax.nn.sigmoid(out[..., 0])

    def sample(self, out, key):
        return jax.random.bernoulli(key, jax.nn.sigmoid(out[..., 0])).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Gaussian:
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

    def log_prob(self, x, out):
        return dist.diag_gaussian_log_prob(x, out[..., 0], self.log_var(out))

    def mean(self, out):
        return out[..., 0]

    def sample(self, out, key):
        return dist.diag_gaussian_sample(out[..., 0], self.log_var(out), key)


@dataclasses.dataclass(frozen=True)
class DiscretizedLogistic:
    """x in {0..255}; a logistic on the [-1, 1] bin-centre scale, discretized to 256 bins."""

    input_kind = "discrete"
    params_per_subpixel = 2

    def _split(self, out):
        return out[..., 0], jnp.clip(out[..., 1], MIN_LOGISTIC_LOG_SCALE, MAX_LOGISTIC_LOG_SCALE)

    def log_prob(self, x, out):
        mean, log_scale = self._split(out)
        return dist.discretized_logistic_log_prob(x, mean, log_scale)

    def mean(self, out):
        return jnp.clip((out[..., 0] + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, out, key):
        mean, log_scale = self._split(out)
        return dist.to_8bit(dist.logistic_sample(mean, log_scale, key))


@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticMixture:
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

    def log_prob(self, x, out):
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


Likelihood = Bernoulli | Gaussian | DiscretizedLogistic | DiscretizedLogisticMixture
