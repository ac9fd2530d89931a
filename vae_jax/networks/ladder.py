"""Flax modules of the hierarchical (ladder) VAE: the top-down ladder over a bottom-up ResNet.

The layout follows Very Deep VAEs (Child 2021) and NVAE (Vahdat & Kautz 2020). Stage ``s``
works at resolution ``H / 2**s`` with ``widths[s]`` channels (stage 0 is the finest).

- ``BottomUp`` (``networks.conv``): x -> (f_0, ..., f_{S-1}), one feature map per stage.
- ``TopDown``: from a learned constant state at the coarsest stage down to the finest, one
  ``TopDownGroup`` per latent group, ``groups_per_stage[s]`` of them at stage ``s``, then
  ``blocks_per_stage`` residual blocks, then a nearest upsampling and a convolution to the
  next stage; a last convolution gives the likelihood's parameters.

How each latent is drawn (from the posterior, from the prior, or given) is not the network's
business: ``TopDown`` asks a ``draw(g, posterior, prior) -> z_g`` function the model passes in,
so inference, generation, partial resampling and scoring a given latent share one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks.activations import activation
from vae_jax.networks.conv import ResBlock, as_pixel_params
from vae_jax.networks.heads import gaussian_head

# The posterior head starts 10x smaller than the default initialisation: q(z_g|.) is then close
# to the prior N(0, I) (small KL), yet already depends on x, so z carries signal from the first
# step (a zero initialisation would make q = p exactly and z pure noise).
POSTERIOR_INIT_SCALE = 0.01  # a variance scale: standard deviation 0.1 x the default


class GroupRecord(NamedTuple):
    """What the top-down pass did at one latent group: the drawn z_g and the two Gaussians
    ``(mean, log_var)`` it was drawn between (``None`` where not computed: the posterior
    without data, the top group's prior, which the model holds)."""

    z: jax.Array
    posterior: tuple[jax.Array, jax.Array] | None
    prior: tuple[jax.Array, jax.Array] | None


class GroupPrior(nn.Module):
    """p(z_g | z_<g) from the state h, and the prior's contribution h_p to the state; both start
    at zero, so p = N(0, I) and h_p = 0 at initialisation."""

    width: int
    latent_channels: int
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        act = activation(self.activation)
        hidden = act(nn.Conv(self.width, (3, 3), dtype=self.dtype, name="hidden")(act(h)))
        zeros = nn.initializers.zeros
        stats = gaussian_head(hidden, self.latent_channels, conv=True, kernel_init=zeros, dtype=self.dtype)
        features = nn.Conv(self.width, (1, 1), dtype=self.dtype, kernel_init=zeros, name="features")(hidden)
        return stats, features


class GroupPosterior(nn.Module):
    """q(z_g | x, z_<g) from the state h and the bottom-up features at the group's stage."""

    width: int
    latent_channels: int
    activation: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, features):
        act = activation(self.activation)
        joint = jnp.concatenate([h, features.astype(h.dtype)], axis=-1)
        hidden = nn.Conv(self.width, (3, 3), dtype=self.dtype, name="hidden")(act(joint))
        small = nn.initializers.variance_scaling(POSTERIOR_INIT_SCALE, "fan_in", "truncated_normal")
        return gaussian_head(act(hidden), self.latent_channels, conv=True, kernel_init=small, dtype=self.dtype)


class TopDownGroup(nn.Module):
    """One latent group g of the ladder, acting on the top-down state h (which carries z_<g):

      prior      (mean_p, log_var_p), h_p = GroupPrior(h)          p(z_g | z_<g)
      posterior  (mean_q, log_var_q)      = GroupPosterior(h, f)    q(z_g | x, z_<g)
      merge      h' = ResBlock(h + h_p + z_proj(z_g))

    z_proj's weights are scaled by 1/sqrt(num_groups) so the residual stream's variance stays
    bounded however many groups add to it (Child 2021, sec. 3.3).
    """

    width: int
    latent_channels: int
    num_groups: int
    activation: str = "silu"
    dtype: Any = jnp.float32

    def setup(self):
        self.prior = GroupPrior(self.width, self.latent_channels, self.activation, self.dtype)
        self.posterior = GroupPosterior(self.width, self.latent_channels, self.activation, self.dtype)
        scaled = nn.initializers.variance_scaling(1.0 / self.num_groups, "fan_in", "truncated_normal")
        self.z_proj = nn.Conv(self.width, (1, 1), dtype=self.dtype, kernel_init=scaled)
        self.block = ResBlock(self.width, self.activation, self.dtype)

    def merge(self, h, prior_features, z):
        return self.block(h + prior_features + self.z_proj(z.astype(self.dtype)))


class TopDown(nn.Module):
    """The top-down pass: latent groups from the coarsest stage to the finest, then the
    likelihood's parameters ``(B, H, W, *output_shape[2:])`` in float32 (``output_shape`` is the
    likelihood's ``params_shape`` at the training size).

    Fully convolutional: the learned initial state is one vector per channel, tiled over the
    coarsest stage, so the same parameters run on images of any size whose sides divide by
    2**(len(widths) - 1) (a whole photograph, as in HiLLoC), not only ``output_shape``.
    """

    output_shape: tuple[int, ...] = (32, 32, 3, 2)
    widths: tuple[int, ...] = (32, 64, 128)
    groups_per_stage: tuple[int, ...] = (1, 1, 1)
    latent_channels: int = 8
    blocks_per_stage: int = 1
    activation: str = "silu"
    dtype: Any = jnp.float32
    patch_size: int = 1  # stage 0 works at H / patch_size (``networks.conv``)

    def setup(self):
        num_stages, num_groups = len(self.widths), sum(self.groups_per_stage)
        self.initial_state = self.param("initial_state", nn.initializers.zeros, (self.widths[-1],))
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
        outputs = self.patch_size**2
        for size in self.output_shape[2:]:
            outputs *= size
        self.out = nn.Conv(outputs, (3, 3), dtype=self.dtype)

    def group_stages(self):
        """The stage of every group, in top-down order (coarsest stage first)."""
        return tuple(
            stage for stage in reversed(range(len(self.widths))) for _ in range(self.groups_per_stage[stage])
        )

    def coarsest_hw(self, image_hw=None):
        """The coarsest stage's (height, width) for images of ``image_hw`` (default: the training size)."""
        height, width = image_hw or self.output_shape[:2]
        factor = self.patch_size * 2 ** (len(self.widths) - 1)
        return height // factor, width // factor

    def _start(self, batch_size, coarsest_hw):
        return jnp.broadcast_to(self.initial_state.astype(self.dtype), (batch_size, *coarsest_hw, self.widths[-1]))

    def start(self, batch_size, image_hw=None):
        """The state before the first group: the learned initial state over the coarsest stage of
        ``batch_size`` images of ``image_hw`` (default: the training size)."""
        return self._start(batch_size, self.coarsest_hw(image_hw))

    def _steps(self):
        """The pass as steps, coarsest stage first: ("up", stage) entering a finer stage, ("group", g),
        ("block", i) leaving a stage."""
        steps, g = [], 0
        for stage in reversed(range(len(self.widths))):
            if stage < len(self.widths) - 1:
                steps.append(("up", stage))
            for _ in range(self.groups_per_stage[stage]):
                steps.append(("group", g))
                g += 1
            steps.extend(("block", stage * self.blocks_per_stage + b) for b in range(self.blocks_per_stage))
        return tuple(steps)

    def _deterministic(self, h, step):
        kind, index = step
        if kind == "up":
            batch, height, wide, channels = h.shape
            return self.ups[index](jax.image.resize(h, (batch, 2 * height, 2 * wide, channels), "nearest"))
        return self.blocks[index](h)

    def _group_statistics(self, h, features, g):
        """Group g's prior (the top group's is the model's: None), its contribution to the state,
        and its posterior given the bottom-up ``features`` (None without data)."""
        group = self.groups[g]
        # The top group's prior is the model's (standard normal or a mixture), not the ladder's.
        prior, prior_features = group.prior(h) if g > 0 else (None, 0.0)
        posterior = group.posterior(h, features[self.group_stages()[g]]) if features is not None else None
        return prior, prior_features, posterior

    def _output(self, h):
        out = self.out(activation(self.activation)(h))
        return as_pixel_params(out, self.output_shape, self.dtype, self.patch_size)

    def __call__(self, features, draw, batch_size, coarsest_hw=None):
        """Run the ladder; ``features`` is the bottom-up output or None (no data: generation, at
        ``coarsest_hw``, default the training size's).

        ``draw(g, posterior, prior)`` returns z_g given the group's posterior and prior
        ``(mean, log_var)`` (either may be None, see ``GroupRecord``). Returns the
        likelihood's parameters and one ``GroupRecord`` per group, in top-down order.
        """
        if features is not None:
            coarsest_hw = features[-1].shape[1:3]
        h = self._start(batch_size, coarsest_hw or self.coarsest_hw())
        records = []
        for step in self._steps():
            if step[0] != "group":
                h = self._deterministic(h, step)
                continue
            g = step[1]
            prior, prior_features, posterior = self._group_statistics(h, features, g)
            z = draw(g, posterior, prior)
            records.append(GroupRecord(z, posterior, prior))
            h = self.groups[g].merge(h, prior_features, z)
        return self._output(h), tuple(records)

    # One group at a time, for coders that need z_g before they can ask for group g + 1 (bits-back):
    # the state h is carried between calls, so coding every group costs one pass, not one per group.

    def to_group(self, h, features, g):
        """From the state after group g - 1's merge (``start``'s for g = 0), run the ladder up to
        group g. Returns ``(h, prior, prior_features, posterior)`` there: ``h`` the state before
        g's merge, the rest as ``_group_statistics`` gives them."""
        steps = self._steps()
        at = steps.index(("group", g))
        first = steps.index(("group", g - 1)) + 1 if g > 0 else 0
        for step in steps[first:at]:
            h = self._deterministic(h, step)
        return (h, *self._group_statistics(h, features, g))

    def group_posterior(self, h, features, g):
        """q(z_g | x, z_<g) as (mean, log_var) at the state ``h`` that ``to_group`` reached, given the
        bottom-up ``features``: the posterior ``to_group`` gives with features, on its own."""
        return self.groups[g].posterior(h, features[self.group_stages()[g]])

    def merge_group(self, h, prior_features, z, g):
        """The state after group g's merge of z (``h``, ``prior_features`` from ``to_group``)."""
        return self.groups[g].merge(h, prior_features, z)

    def finish(self, h):
        """The likelihood's parameters from the state after the last group's merge."""
        steps = self._steps()
        for step in steps[steps.index(("group", len(self.groups) - 1)) + 1 :]:
            h = self._deterministic(h, step)
        return self._output(h)

    def top_posterior(self, features):
        """q(z_1 | x): the top group's (mean, log_var), which needs no other latent."""
        return self.groups[0].posterior(self._start(features[-1].shape[0], features[-1].shape[1:3]), features[-1])
