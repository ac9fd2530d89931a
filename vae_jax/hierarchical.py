"""The hierarchical VAE: a top-down ladder of latent groups z_1, ..., z_G (Ladder VAE,
Sønderby et al. 2016; NVAE, Vahdat & Kautz 2020; Very Deep VAEs, Child 2021).

  p(x, z) = p(z_1) prod_{g>1} p(z_g | z_<g) p(x | z),
  q(z | x) = prod_g q(z_g | x, z_<g),
  ELBO = E_q[log p(x | z)] - sum_g E_q[KL(q(z_g | x, z_<g) || p(z_g | z_<g))].

Every conditional is a diagonal Gaussian computed from the top-down state (which carries
z_<g), the posterior also from the bottom-up features of x at that group's resolution, so
each group's KL is analytic given the sampled path z_<g. The top group's prior p(z_1) is the
model's ``prior``: the standard normal (analytic KL) or a mixture (``MixtureOfGaussians``,
``VampPrior``: one-sample KL log q - log p), exactly as in the one-group ``VAE``.

``HierarchicalVAE`` is a ``model.HierarchicalModel``: its latent is the tuple of groups
(top-down), ``posterior`` gives every group's Gaussian along the path of posterior means,
``decoder_output`` and ``prior_log_prob`` take the whole tuple, and ``kl_groups`` has one entry
per group (free bits apply per group). It also runs the top-down pass one group at a time
(``bottom_up_features``, ``top_down_start``, ``top_down_to_group``, ``top_down_merge``,
``top_down_output``), as a bits-back coder needs it: z_g decided before group g + 1 is computed.

Stability (see ``networks.ladder``): residual branches and prior heads start at zero, so the
ladder starts as a plain decoder with p(z_g | z_<g) = N(0, I); posterior heads start small, so
q ~ p and every KL is a fraction of a nat at initialisation; log-variances are soft-clamped to
(-10, 10). KL warm-up and free bits are options of the training loss; skipping outlier
gradients is the training step's.

PRNG: group g of example e draws with ``jax.random.fold_in(keys[e], g)``, in inference,
generation and partial resampling alike, so the three agree wherever they draw the same group
from the same distribution.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import priors as priors_lib
from vae_jax import checks
from vae_jax.architectures import check_conv_sizes, check_divisible, check_parts
from vae_jax.likelihoods import DiscretizedLogisticMixture, Likelihood
from vae_jax.model import LatentTerms, as_latent, check_network_shapes, encoder_input, latent_groups
from vae_jax.networks.conv import BottomUp
from vae_jax.networks.ladder import TopDown
from vae_jax.priors import Prior, StandardNormal


@dataclasses.dataclass(frozen=True)
class HierarchicalVAE:
    """Latent groups of shapes ``group_shapes`` (top-down order) over a bottom-up/top-down ResNet.

    params: ``{"encoder": bottom-up, "decoder": top-down (with every group's prior and
    posterior heads, since both read the top-down state), "prior": the top prior's}``.
    """

    bottom_up: BottomUp
    top_down: TopDown
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    group_shapes: tuple[tuple[int, ...], ...]
    prior: Prior = StandardNormal()

    @property
    def num_groups(self):
        return len(self.group_shapes)

    @property
    def latent_template(self):
        return as_latent(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in self.group_shapes)

    # -- networks -------------------------------------------------------------------------

    def init(self, key):
        encoder_key, decoder_key, prior_key = jax.random.split(key, 3)
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        encoder_params = self.bottom_up.init(encoder_key, x)["params"]
        features = self.bottom_up.apply({"params": encoder_params}, x)
        # Drawing every z_g at its posterior mean visits every head once, creating all params.
        at_posterior_mean = lambda g, posterior, prior: posterior[0]
        params = {
            "encoder": encoder_params,
            "decoder": self.top_down.init(decoder_key, features, at_posterior_mean, 1)["params"],
            "prior": self.prior.init(prior_key, self.group_shapes[0], self.data_shape),
        }
        check_network_shapes(self, params)
        return params

    def _top_down(self, params, features, draw, batch_size, coarsest_hw=None):
        return self.top_down.apply({"params": params["decoder"]}, features, draw, batch_size, coarsest_hw)

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        """The top group's prior p(z_1) as a mixture (VampPrior: q(z_1 | u_k) at pseudo-inputs)."""

        def posterior_of(pseudo_inputs):
            features = self.bottom_up.apply({"params": params["encoder"]}, pseudo_inputs)
            return self.top_down.apply({"params": params["decoder"]}, features, method=TopDown.top_posterior)

        return priors_lib.components(self.prior, params["prior"], self.group_shapes[0], posterior_of)

    # -- the ladder, with each group's draw chosen ------------------------------------------

    def posterior(self, params, x):
        """Every group's (mean, log_var) of q(z_g | x, z_<g) along the path of posterior means."""
        at_mean = lambda g, posterior, prior: posterior[0]
        _, records = self._top_down(params, self.bottom_up_features(params, x), at_mean, x.shape[0])
        return as_latent(r.posterior[0] for r in records), as_latent(r.posterior[1] for r in records)

    def _given(self, params, z):
        """The top-down pass with every group given: z_g = z[g]."""
        groups = latent_groups(z)
        top = groups[0]  # at the coarsest stage: its size fixes the image's
        return self._top_down(params, None, lambda g, posterior, prior: groups[g], top.shape[0], top.shape[1:3])

    def decoder_output(self, params, z):
        """p(x | z)'s parameters for the whole latent z = (z_1, ..., z_G)."""
        return self._given(params, z)[0]

    def prior_log_prob(self, params, z):
        """log p(z) = log p(z_1) + sum_{g>1} log p(z_g | z_<g), shape (B,)."""
        _, records = self._given(params, z)
        log_p = priors_lib.batch_log_prob(self.prior_components(params), records[0].z)
        for record in records[1:]:
            log_p = log_p + dist.sum_over_event(dist.diag_gaussian_log_prob(record.z, *record.prior))
        return log_p

    def _run(self, params, features, keys, keep_groups, temperature, prior_keys=None):
        """One top-down pass: groups g < keep_groups from the posterior (needs ``features``),
        the rest from the priors with their noise scaled by ``temperature``; posterior draws
        use ``keys``, prior draws ``prior_keys`` (default: the same keys)."""
        prior_keys = keys if prior_keys is None else prior_keys
        if keep_groups == 0:
            z_top = priors_lib.batch_sample(self.prior_components(params), dist.fold_in_each(prior_keys, 0), temperature)

        def draw(g, posterior, prior):
            if g < keep_groups:
                return dist.gaussian_draws(*posterior, dist.fold_in_each(keys, g))
            if g == 0:
                return z_top
            return dist.gaussian_draws(*prior, dist.fold_in_each(prior_keys, g), temperature)

        return self._top_down(params, features, draw, keys.shape[0])

    def infer(self, params, x, keys) -> LatentTerms:
        """z_g ~ q(z_g | x, z_<g) down the ladder, and per group the KL at that path:

        KL_g = sum over z_g's dimensions of kl_diag_gaussians(q_g, p_g)   (below the top),
        log q = sum_g log q(z_g | x, z_<g),   log p = sum_g log p(z_g | z_<g),
        ``kl_groups`` in top-down order (index 0 is z_1, with the model's prior).
        """
        out, records = self._run(params, self.bottom_up_features(params, x), keys, self.num_groups, 1.0)
        top = records[0]
        log_q, log_p, kl_top = priors_lib.top_terms(
            self.prior, lambda: self.prior_components(params), top.z, *top.posterior
        )
        kl_groups = [kl_top]
        for record in records[1:]:
            log_q = log_q + dist.sum_over_event(dist.diag_gaussian_log_prob(record.z, *record.posterior))
            log_p = log_p + dist.sum_over_event(dist.diag_gaussian_log_prob(record.z, *record.prior))
            kl_groups.append(dist.sum_over_event(dist.kl_diag_gaussians(*record.posterior, *record.prior)))
        return LatentTerms(out, tuple(kl_groups), log_q, log_p)

    def generate(self, params, keys, temperature=1.0):
        """Decoder output with every group drawn from its prior, noise scaled by ``temperature``."""
        return self._run(params, None, keys, 0, temperature)[0]

    def generate_from(self, params, x, keys, keep_groups: int, temperature=1.0, prior_keys=None):
        """Decoder output with z_1..z_k drawn from q(. | x) (k = ``keep_groups``, the same draws
        as ``infer`` with these ``keys``) and z_{k+1}..z_G from the priors at ``temperature``:
        what the first k groups of x fix, and what the finer groups are free to vary.

        ``prior_keys`` (default ``keys``) drive the prior draws alone: vary them with ``keys``
        fixed to resample the finer groups around the same posterior draws.
        ``keep_groups = num_groups`` reproduces ``infer``'s decoder output (the reconstruction
        path) at any temperature; ``keep_groups = 0`` is ``generate(params, prior_keys, .)``.
        """
        check_keep_groups(keep_groups, self.num_groups)
        x = jnp.asarray(x)
        if x.shape[1:] != tuple(self.data_shape) or x.shape[0] != keys.shape[0]:
            raise ValueError(
                f"x: expected a batch (B, *{self.data_shape}) with one key per example, "
                f"got x {x.shape} and keys {keys.shape}"
            )
        if prior_keys is not None and prior_keys.shape != keys.shape:
            raise ValueError(f"prior_keys: expected shape {keys.shape} like keys, got {prior_keys.shape}")
        features = self.bottom_up_features(params, x) if keep_groups else None
        return self._run(params, features, keys, keep_groups, temperature, prior_keys)[0]


    # -- the top-down pass one group at a time, for a coder that needs z_g before group g + 1 ------
    # (bits-back ANS). Each step is the very computation the whole pass makes at that point, so a
    # path coded step by step meets the same networks as ``infer``'s.

    def bottom_up_features(self, params, x):
        """The bottom-up features of x (B, H, W, C), one map per stage, finest first: all that the
        posteriors q(z_g | x, z_<g) read of x."""
        return self.bottom_up.apply({"params": params["encoder"]}, encoder_input(self.likelihood.input_kind, x))

    def top_down_start(self, params, batch_size, image_hw):
        """The top-down state before the first group, for ``batch_size`` images of ``(H, W)`` =
        ``image_hw``: the learned initial state over the coarsest stage."""
        return self.top_down.apply({"params": params["decoder"]}, batch_size, image_hw, method=TopDown.start)

    def top_down_to_group(self, params, state, features, g):
        """From ``state``, the top-down state after group g - 1's merge (``top_down_start``'s for
        g = 0), the ladder up to group g. Returns ``(step, prior, posterior)``: ``step`` the state
        there, for ``top_down_merge``; p(z_g | z_<g) as (mean, log_var), None for g = 0 (the top
        group's prior is the model's ``prior``); q(z_g | x, z_<g) as (mean, log_var) given the
        bottom-up ``features`` of x, None when ``features`` is None (no data)."""
        h, prior, prior_features, posterior = self.top_down.apply(
            {"params": params["decoder"]}, state, features, g, method=TopDown.to_group
        )
        return (h, prior_features), prior, posterior

    def top_down_posterior(self, params, step, features, g):
        """q(z_g | x, z_<g) as (mean, log_var) at ``step`` (``top_down_to_group``'s, with or without
        features) given the bottom-up ``features`` of x: the posterior ``top_down_to_group`` gives
        with features, for whoever needs the prior before it has x (a bits-back decoder)."""
        h, _ = step
        return self.top_down.apply({"params": params["decoder"]}, h, features, g, method=TopDown.group_posterior)

    def top_down_merge(self, params, step, z, g):
        """The top-down state after group g's merge of its draw ``z`` (``step`` from
        ``top_down_to_group``): what group g + 1, or ``top_down_output`` after the last, continues from."""
        h, prior_features = step
        return self.top_down.apply({"params": params["decoder"]}, h, prior_features, z, g, method=TopDown.merge_group)

    def top_down_output(self, params, state):
        """p(x | z)'s parameters (B, H, W, ...) from the state after the last group's merge: the
        ``decoder_output`` of the groups merged along the way."""
        return self.top_down.apply({"params": params["decoder"]}, state, method=TopDown.finish)


def check_keep_groups(keep_groups, num_groups):
    is_int = isinstance(keep_groups, int) and not isinstance(keep_groups, bool)
    if not (is_int and 0 <= keep_groups <= num_groups):
        raise ValueError(f"keep_groups: expected an int in [0, {num_groups}], got {keep_groups!r}")


def hierarchical_vae(
    data_shape=(32, 32, 3),
    *,
    widths=(32, 64, 128, 128),
    blocks_per_stage=1,
    latent_channels=8,
    groups_per_stage=(0, 2, 4, 2),
    likelihood: Likelihood = DiscretizedLogisticMixture(5),
    prior: Prior = StandardNormal(),
    activation="silu",
    dtype: Any = jnp.float32,
    patch_size: int = 1,
) -> HierarchicalVAE:
    """A ladder over stages of resolution H / 2**s with ``widths[s]`` channels (s = 0 finest).

    ``groups_per_stage[s]`` latent groups of ``latent_channels`` channels sit at stage s (an
    int: the same at every stage); the coarsest stage needs at least one (it holds z_1).
    The default, for 32x32 images: 8 groups at 4x4 (2), 8x8 (4) and 16x16 (2).
    ``patch_size`` p > 1 runs stage s at H / (p 2**s) on space-to-depth patches (``networks.conv``).
    """
    data_shape, widths, blocks_per_stage, latent_channels = check_conv_sizes(
        data_shape, widths, blocks_per_stage, latent_channels
    )
    check_parts(likelihood, prior, activation)
    if isinstance(groups_per_stage, int) and not isinstance(groups_per_stage, bool):
        groups_per_stage = (groups_per_stage,) * len(widths)
    groups_per_stage = checks.check_sizes("groups_per_stage", groups_per_stage, 0)
    if len(groups_per_stage) != len(widths):
        raise ValueError(
            f"groups_per_stage: expected one count per stage ({len(widths)} widths), got {groups_per_stage}"
        )
    if any(n < 0 for n in groups_per_stage) or groups_per_stage[-1] < 1:
        raise ValueError(
            f"groups_per_stage: expected counts >= 0 with at least one group at the coarsest stage, "
            f"got {groups_per_stage}"
        )
    check_divisible(data_shape, len(widths), patch_size)
    height, width, _ = data_shape
    top_down = TopDown(
        likelihood.params_shape(data_shape), widths, groups_per_stage, latent_channels, blocks_per_stage,
        activation, dtype, patch_size,
    )  # fmt: skip
    scale = lambda stage: patch_size * 2**stage
    group_shapes = tuple(
        (height // scale(stage), width // scale(stage), latent_channels) for stage in top_down.group_stages()
    )
    return HierarchicalVAE(
        bottom_up=BottomUp(widths, blocks_per_stage, activation, dtype, patch_size),
        top_down=top_down,
        likelihood=likelihood,
        data_shape=data_shape,
        group_shapes=group_shapes,
        prior=prior,
    )
