"""PixelCNN++'s channel-coupled mixture: one distribution per pixel over its R, G, B together.

Each pixel reads its own earlier channels (G reads R, B reads R and G) and nothing of the other
pixels. ``coupled_table`` is the NumPy float64 twin of its channel conditionals, what a lossless
coder codes with.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions as dist
from vae_jax.likelihoods import logistic
from vae_jax.likelihoods.context import Context
from vae_jax.likelihoods.contract import LikelihoodBase, register
from vae_jax.likelihoods.factorized import DiscretizedLogisticMixture
from vae_jax.likelihoods.logistic import MAX_LOGISTIC_LOG_SCALE, MIN_LOGISTIC_LOG_SCALE


@register("coupled")
@dataclasses.dataclass(frozen=True)
class CoupledLogisticMixture(LikelihoodBase):
    """x in {0..255}^3 (R, G, B); PixelCNN++'s likelihood (Salimans et al. 2017, used by VDVAE):
    one K-component mixture per pixel whose weights the three channels share, with G's mean
    shifted by the actual R and B's by R and G, per component:

      p(r, g, b) = sum_k pi_k L(r; mu_Rk, s_Rk) L(g; mu_Gk + alpha_k r, s_Gk)
                                L(b; mu_Bk + beta_k r + gamma_k g, s_Bk),

    L the logistic discretized into 256 bins (``distributions.discretized_logistic_log_prob``)
    and r, g the bin centres 2x/255 - 1 of the actual values. The decoder gives ``10 K``
    numbers per pixel: K mixture logits, then 3K means, 3K log-scales and 3K coupling
    coefficients (alpha, beta, gamma = tanh of them), each in R, G, B order.
    """

    num_components: int = 10
    input_kind = "discrete"
    context = Context(earlier_channels=True)

    def __post_init__(self):
        if not (isinstance(self.num_components, int) and self.num_components >= 1):
            raise ValueError(f"num_components must be a positive int, got {self.num_components!r}")

    def params_shape(self, data_shape):
        if len(data_shape) < 1 or data_shape[-1] != 3:
            raise ValueError(f"data_shape: the channel-coupled mixture models RGB pixels, got {data_shape}")
        return (*data_shape[:-1], 10 * self.num_components)

    def for_data_shape(self, data_shape):
        """On other than three channels, the independent mixture of as many components: coupling
        orders R, G, B, and the coupled mixture of one channel is the independent one."""
        return self if data_shape[-1] == 3 else DiscretizedLogisticMixture(self.num_components)

    def _split(self, out):
        """(logits (..., K), means, log_scales, coefficients (..., 3, K)), R, G, B along axis -2."""
        k = self.num_components
        logits = out[..., :k]
        rest = out[..., k:].reshape(*out.shape[:-1], 3, 3, k)  # (what, channel, component)
        log_scales = jnp.clip(rest[..., 1, :, :], MIN_LOGISTIC_LOG_SCALE, MAX_LOGISTIC_LOG_SCALE)
        return logits, rest[..., 0, :, :], log_scales, jnp.tanh(rest[..., 2, :, :])

    @staticmethod
    def _coupled_means(means, coefficients, x):
        """Each channel's component means given the actual previous channels x (..., 3)."""
        centre = (2.0 * jnp.asarray(x, jnp.float32) / 255.0 - 1.0)[..., None]  # (..., 3, 1)
        red, green = centre[..., 0, :], centre[..., 1, :]
        alpha, beta, gamma = coefficients[..., 0, :], coefficients[..., 1, :], coefficients[..., 2, :]
        return jnp.stack(
            [means[..., 0, :], means[..., 1, :] + alpha * red, means[..., 2, :] + beta * red + gamma * green], axis=-2
        )

    def _component_log_probs(self, x, out):
        """log softmax weights (..., K) and log L_ck(x_c | x_<c) (..., 3, K)."""
        logits, means, log_scales, coefficients = self._split(out)
        coupled = self._coupled_means(means, coefficients, x)
        per_channel = dist.discretized_logistic_log_prob(jnp.asarray(x)[..., None], coupled, log_scales)
        return jax.nn.log_softmax(logits, axis=-1), per_channel

    def log_prob(self, x, out):
        """log p(r, g, b) per pixel: x (..., 3), out (..., 10K) -> (...)."""
        log_weights, per_channel = self._component_log_probs(x, out)
        return jax.nn.logsumexp(log_weights + jnp.sum(per_channel, axis=-2), axis=-1)

    def log_prob_sum(self, x, out, event_ndim):
        """Sum of ``log_prob`` over the pixels of the last ``event_ndim`` axes of x (channels last)."""
        lead = x.shape[: x.ndim - event_ndim]
        pixels = jnp.reshape(x, (*lead, -1, 3))
        return jnp.sum(self.log_prob(pixels, jnp.reshape(out, (*lead, pixels.shape[-2], out.shape[-1]))), axis=-1)

    def channel_log_probs(self, x, out):
        """log P(x_c = v | x_<c) for every channel c (R, G, B) and value v: (..., 3, 256), the
        conditionals a coder codes R, then G given R, then B given R and G with. Channel c uses
        only x_<c, so its values past c may be anything (a decoder fills them in as it goes).

        p(g | r) = sum_k w_k(r) L(g; mu_Gk + alpha_k r, s_Gk),  w_k(r) propto pi_k L(r; mu_Rk, s_Rk),
        and likewise B with weights propto pi_k L(r) L(g | r).
        """
        log_weights, per_channel = self._component_log_probs(x, out)
        # Component weights after seeing the channels before c: pi, pi L_R, pi L_R L_G. Summed
        # without channel c itself (not cumsum minus it): a decoder that has not seen x_c yet must get
        # the very same float bits as the encoder that has.
        first = per_channel[..., :1, :]
        seen = jnp.concatenate([jnp.zeros_like(first), first, first + per_channel[..., 1:2, :]], axis=-2)
        weights = jax.nn.log_softmax(log_weights[..., None, :] + seen, axis=-1)
        _, means, log_scales, coefficients = self._split(out)
        coupled = self._coupled_means(means, coefficients, x)
        values = jnp.arange(256, dtype=jnp.float32)[:, None, None]  # (256, 1, 1) against (..., 3, K)
        table = dist.discretized_logistic_log_prob(values, coupled[..., None, :, :], log_scales[..., None, :, :])
        return jnp.moveaxis(jax.nn.logsumexp(weights[..., None, :, :] + table, axis=-1), -2, -1)

    def mean(self, out):
        """The mixture mean of each channel in [0, 1], the coupling taken at the component's means."""
        logits, means, _, coefficients = self._split(out)
        red = means[..., 0, :]
        green = means[..., 1, :] + coefficients[..., 0, :] * red
        blue = means[..., 2, :] + coefficients[..., 1, :] * red + coefficients[..., 2, :] * green
        weights = jax.nn.softmax(logits, axis=-1)
        centre = jnp.stack([jnp.sum(weights * c, axis=-1) for c in (red, green, blue)], axis=-1)
        return jnp.clip((centre + 1.0) / 2.0, 0.0, 1.0)

    def sample(self, out, key):
        """k ~ Categorical(pi) per pixel, then r, g given r, b given r and g, each an 8-bit draw."""
        logits, means, log_scales, coefficients = self._split(out)
        component_key, *channel_keys = jax.random.split(key, 4)
        component = jax.random.categorical(component_key, logits, axis=-1)
        pick = lambda a: jnp.take_along_axis(a, component[..., None], axis=-1)[..., 0]
        drawn = jnp.zeros((*out.shape[:-1], 3), jnp.int32)
        for c in range(3):
            coupled = self._coupled_means(means, coefficients, drawn)[..., c, :]
            value = dist.to_8bit(dist.logistic_sample(pick(coupled), pick(log_scales[..., c, :]), channel_keys[c]))
            drawn = drawn.at[..., c].set(value)
        return drawn

    def coding_output(self, out):
        """``out`` with tanh taken of every coefficient (the coupling's, and the local mixtures'
        neighbour ones after it: every number from the 7K-th on), as the coding tables read them."""
        k = 7 * self.num_components
        return jnp.concatenate([out[..., :k], jnp.tanh(out[..., k:])], axis=-1)

    def coding_tables(self, out, tile_height=None):
        """``coupled_table`` of each pixel's own parameters (no neighbours: tiles need no telling apart)."""
        rows = logistic.raster_rows(out)
        k = self.num_components
        return lambda indices, x_all, channel: coupled_table(rows[indices], x_all[indices], channel, k)

    def coding_rows(self, out, tile_height=None):
        """For a coder that codes each pixel's shared component with bits back (one component's
        table a channel instead of the mixture's K): the function ``rows(indices, x_all)`` giving
        the pixels' coupled-mixture rows (n, 10K) (``coupled_channel`` reads a channel's
        components from them), each pixel's own here."""
        rows = logistic.raster_rows(out)
        return lambda indices, x_all: rows[indices]


def coupled_channel(rows, x_rows, channel, k):
    """Channel c's K components given the pixel's earlier channels in x_rows (n, C): their means
    (mu_ck moved by the coupling) and log-scales, each (n, K), from coupled rows (n, 10K) of the
    coding output (``coding_output``: the coefficients alpha, beta, gamma already tanh'd)."""
    rest = rows[:, k:].reshape(-1, 3, 3, k)
    means, log_scales = rest[:, 0], rest[:, 1]
    if channel == 0:
        return means[:, 0], log_scales[:, 0]
    coefficients, centres = rest[:, 2], logistic.centres(x_rows[:, :2])[..., None]
    if channel == 1:
        return means[:, 1] + coefficients[:, 0] * centres[:, 0], log_scales[:, 1]
    return means[:, 2] + coefficients[:, 1] * centres[:, 0] + coefficients[:, 2] * centres[:, 1], log_scales[:, 2]


def coupled_table(rows, x_rows, channel, k, component_bins=None):
    """The channel-coupled mixture's P(x_c = v | x_<c) for rows (n, 10K) of K logits, then means,
    log-scales, coefficients (tanh'd: ``coding_output``), each (R, G, B) x K; x_rows (n, C) holds
    the channels before c.
    ``component_bins``, a dict, keeps each channel's (n, K, 256) component tables for the next
    channel of the same rows, which reads them as evidence for the component."""
    logits, rest = rows[:, :k], rows[:, k:].reshape(-1, 3, 3, k)
    means, log_scales, coefficients = rest[:, 0], rest[:, 1], rest[:, 2]
    centres = logistic.centres(x_rows[:, :2])[..., None]  # (n, 2, 1): r, g
    coupled = [
        means[:, 0],
        means[:, 1] + coefficients[:, 0] * centres[:, 0],
        means[:, 2] + coefficients[:, 1] * centres[:, 0] + coefficients[:, 2] * centres[:, 1],
    ]
    component_bins = {} if component_bins is None else component_bins

    def bins(c):
        if c not in component_bins:
            component_bins[c] = logistic.component_bins(coupled[c], log_scales[:, c])
        return component_bins[c]

    log_weights = logits
    for seen in range(channel):  # p(k | x_<c) propto pi_k prod_{c' < c} P_k(x_c')
        value = x_rows[:, seen]
        probability = np.take_along_axis(bins(seen), value[:, None, None].astype(np.intp), axis=2)[..., 0]
        log_weights = log_weights + np.log(np.maximum(probability, 1e-300))
    return logistic.weighted_sum(log_weights, bins(channel))
