"""Flax modules of the hierarchical (ladder) VAE: a bottom-up ResNet and a top-down ladder.

The layout follows Very Deep VAEs (Child 2021) and NVAE (Vahdat & Kautz 2020). Stage ``s``
works at resolution ``H / 2**s`` with ``widths[s]`` channels (stage 0 is the finest).

- ``BottomUp``: x -> (f_0, ..., f_{S-1}), one deterministic feature map per stage.
- ``TopDown``: from a learned constant state at the coarsest stage down to the finest, one
  ``TopDownGroup`` per latent group, ``groups_per_stage[s]`` of them at stage ``s``, then
  ``blocks_per_stage`` residual blocks, then a nearest upsampling and a convolution to the
  next stage; a last convolution gives the likelihood's parameters.

How each latent is drawn (from the posterior, from the prior, or given) is not the network's
business: ``TopDown`` asks a ``draw(g, posterior, prior) -> z_g`` function the model passes in,
so inference, generation and partial resampling share one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, activation, soft_clamp
from vae_jax.networks.conv import ResBlock

# The posterior head's last layer starts 10x smaller than the default initialisation: q(z_g|.)
# is then close to the prior N(0, I) (small KL), yet already depends on x, so z carries signal
# from the first step (a zero initialisation would make q = p exactly and z pure noise).
POSTERIOR_INIT_SCALE = 0.01  # a variance scale: standard deviation 0.1 x the default


class GroupRecord(NamedTuple):
    """What the top-down pass did at one latent group: the drawn z_g and the two Gaussians
    ``(mean, log_var)`` it was drawn between (``None`` where not computed: the posterior
    without data, the top group's prior, which the model holds)."""

    z: jax.Array
    posterior: tuple[jax.Array, jax.Array] | None
    prior: tuple[jax.Array, jax.Array] | None


def _gaussian_stats(raw, dtype):
    mean, log_var = jnp.split(raw.astype(accumulation_dtype(dtype)), 2, axis=-1)
    return mean, soft_clamp(log_var)


class BottomUp(nn.Module):
    """x -> one feature map per stage (finest first): stem, then per stage a stride-2
    convolution (from stage 1 on) and ``blocks_per_stage`` residual blocks."""

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.widths[0], (3, 3), dtype=self.dtype, name="stem")(x.astype(self.dtype))
        features = []
        for stage, width in enumerate(self.widths):
            if stage > 0:
                h = nn.Conv(width, (4, 4), strides=(2, 2), dtype=self.dtype, name=f"down_{stage}")(h)
            for block in range(self.blocks_per_stage):
                h = ResBlock(width, self.activation, self.dtype, name=f"stage_{stage}_block_{block}")(h)
            features.append(h)
        return tuple(features)


class TopDownGroup(nn.Module):
    """One latent group g of the ladder, acting on the top-down state h (which carries z_<g):

      prior      (mean_p, log_var_p), h_p = prior_head(h)        p(z_g | z_<g)
      posterior  (mean_q, log_var_q)      = posterior_head(h, f)  q(z_g | x, z_<g)
      merge      h' = ResBlock(h + h_p + z_proj(z_g))

    The prior head's outputs start at zero, so p(z_g | z_<g) = N(0, I) and h_p = 0 at
    initialisation; z_proj's weights are scaled by 1/sqrt(num_groups) so the residual stream's
    variance stays bounded however many groups add to it (Child 2021, sec. 3.3).
    """

    width: int
    latent_channels: int
    num_groups: int
    activation: str = "silu"
    dtype: Any = jnp.float32

    def setup(self):
        conv = lambda features, size, **kw: nn.Conv(features, (size, size), dtype=self.dtype, **kw)
        self.prior_hidden = conv(self.width, 3)
        self.prior_stats = conv(2 * self.latent_channels, 1, kernel_init=nn.initializers.zeros)
        self.prior_features = conv(self.width, 1, kernel_init=nn.initializers.zeros)
        self.posterior_hidden = conv(self.width, 3)
        self.posterior_stats = conv(
            2 * self.latent_channels,
            1,
            kernel_init=nn.initializers.variance_scaling(POSTERIOR_INIT_SCALE, "fan_in", "truncated_normal"),
        )
        self.z_proj = conv(
            self.width,
            1,
            kernel_init=nn.initializers.variance_scaling(1.0 / self.num_groups, "fan_in", "truncated_normal"),
        )
        self.block = ResBlock(self.width, self.activation, self.dtype)

    def prior(self, h):
        """(mean_p, log_var_p) in float32, and the prior's contribution h_p to the state."""
        act = activation(self.activation)
        hidden = act(self.prior_hidden(act(h)))
        return _gaussian_stats(self.prior_stats(hidden), self.dtype), self.prior_features(hidden)

    def posterior(self, h, features):
        """(mean_q, log_var_q) in float32, from the state and the bottom-up features."""
        act = activation(self.activation)
        hidden = self.posterior_hidden(act(jnp.concatenate([h, features.astype(h.dtype)], axis=-1)))
        return _gaussian_stats(self.posterior_stats(act(hidden)), self.dtype)

    def merge(self, h, prior_features, z):
        return self.block(h + prior_features + self.z_proj(z.astype(self.dtype)))


class TopDown(nn.Module):
    """The top-down pass: latent groups from the coarsest stage to the finest, then the
    likelihood's parameters ``(B, *output_shape, params_per_subpixel)`` in float32."""

    output_shape: tuple[int, int, int] = (32, 32, 3)
    params_per_subpixel: int = 2
    widths: tuple[int, ...] = (32, 64, 128)
    groups_per_stage: tuple[int, ...] = (1, 1, 1)
    latent_channels: int = 8
    blocks_per_stage: int = 1
    activation: str = "silu"
    dtype: Any = jnp.float32

    def setup(self):
        num_stages, num_groups = len(self.widths), sum(self.groups_per_stage)
        height, wide, channels = self.output_shape
        factor = 2 ** (num_stages - 1)
        self.initial_state = self.param(
            "initial_state", nn.initializers.zeros, (height // factor, wide // factor, self.widths[-1])
        )
        self.groups = [
            TopDownGroup(self.widths[stage], self.latent_channels, num_groups, self.activation, self.dtype)
            for stage in self.group_stages()
        ]
        self.blocks = [
            ResBlock(self.widths[stage], self.activation, self.dtype)
            for stage in range(num_stages)
            for _ in range(self.blocks_per_stage)
        ]
        self.ups = [nn.Conv(width, (3, 3), dtype=self.dtype) for width in self.widths[:-1]]
        self.out = nn.Conv(channels * self.params_per_subpixel, (3, 3), dtype=self.dtype)

    def group_stages(self):
        """The stage of every group, in top-down order (coarsest stage first)."""
        return tuple(
            stage for stage in reversed(range(len(self.widths))) for _ in range(self.groups_per_stage[stage])
        )

    def _start(self, batch_size):
        return jnp.broadcast_to(
            self.initial_state.astype(self.dtype), (batch_size, *self.initial_state.shape)
        )

    def __call__(self, features, draw, batch_size):
        """Run the ladder; ``features`` is the bottom-up output or None (no data: generation).

        ``draw(g, posterior, prior)`` returns z_g given the group's posterior and prior
        ``(mean, log_var)`` (either may be None, see ``GroupRecord``). Returns the
        likelihood's parameters and one ``GroupRecord`` per group, in top-down order.
        """
        h = self._start(batch_size)
        records, g = [], 0
        for stage in reversed(range(len(self.widths))):
            if stage < len(self.widths) - 1:
                batch, height, wide, channels = h.shape
                h = jax.image.resize(h, (batch, 2 * height, 2 * wide, channels), "nearest")
                h = self.ups[stage](h)
            for _ in range(self.groups_per_stage[stage]):
                group = self.groups[g]
                # The top group's prior is the model's (standard normal or a mixture), not the ladder's.
                prior, prior_features = group.prior(h) if g > 0 else (None, 0.0)
                posterior = group.posterior(h, features[stage]) if features is not None else None
                z = draw(g, posterior, prior)
                records.append(GroupRecord(z, posterior, prior))
                h = group.merge(h, prior_features, z)
                g += 1
            for block in range(self.blocks_per_stage):
                h = self.blocks[stage * self.blocks_per_stage + block](h)
        out = self.out(activation(self.activation)(h))
        batch, height, wide, _ = out.shape
        out = out.reshape(batch, height, wide, self.output_shape[-1], self.params_per_subpixel)
        return out.astype(accumulation_dtype(self.dtype)), tuple(records)

    def top_posterior(self, features):
        """q(z_1 | x): the top group's (mean, log_var), which needs no other latent."""
        return self.groups[0].posterior(self._start(features[-1].shape[0]), features[-1])
