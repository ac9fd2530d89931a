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

``HierarchicalVAE`` implements the model protocol of ``vae_jax.model`` (``init``,
``posterior``, ``infer``, ``generate``, ``decoder_output``, ``prior_components``), so
``elbo``, ``iwae_bound``, ``log_likelihood``, ``sample``, ``reconstruct`` and ``encode`` work
on it unchanged; ``kl_groups`` has one entry per group (free bits apply per group).

Stability (see ``networks.ladder``): residual branches and prior heads start at zero, so the
ladder starts as a plain decoder with p(z_g | z_<g) = N(0, I); posterior heads start small, so
q ~ p and every KL is a fraction of a nat at initialisation; log-variances are soft-clamped to
(-10, 10). KL warm-up (``beta``) and free bits (per group) are options of ``vae_jax.elbo``;
skipping outlier gradients is the training loop's.

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
from vae_jax.likelihoods import DiscretizedLogisticMixture, Likelihood
from vae_jax.model import LatentTerms, encoder_input
from vae_jax.networks.ladder import BottomUp, TopDown
from vae_jax.priors import Prior, StandardNormal


def _sum_over_event(values):
    return jnp.sum(values, axis=tuple(range(1, values.ndim)))


def _group_keys(keys, g):
    """Group g's key for every example: fold_in(keys[e], g)."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, g)


def _gaussian_draw(mean, log_var, keys, temperature=1.0):
    """z = mean + temperature * exp(log_var / 2) * eps, eps ~ N(0, I) from each example's key."""
    eps = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:], jnp.float32))(keys)
    return mean + temperature * jnp.exp(0.5 * log_var) * eps


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
    def latent_shape(self):
        """The top group's shape: what ``encode`` returns and ``decode`` takes."""
        return self.group_shapes[0]

    @property
    def num_groups(self):
        return len(self.group_shapes)

    # -- networks -------------------------------------------------------------------------

    def init(self, key):
        encoder_key, decoder_key, prior_key = jax.random.split(key, 3)
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        encoder_params = self.bottom_up.init(encoder_key, x)["params"]
        features = self.bottom_up.apply({"params": encoder_params}, x)
        # Drawing every z_g at its posterior mean visits every head once, creating all params.
        at_posterior_mean = lambda g, posterior, prior: posterior[0]
        return {
            "encoder": encoder_params,
            "decoder": self.top_down.init(decoder_key, features, at_posterior_mean, 1)["params"],
            "prior": self.prior.init(prior_key, self.latent_shape, self.data_shape),
        }

    def _features(self, params, x):
        features = encoder_input(self.likelihood.input_kind, x)
        return self.bottom_up.apply({"params": params["encoder"]}, features)

    def _top_down(self, params, features, draw, batch_size):
        return self.top_down.apply({"params": params["decoder"]}, features, draw, batch_size)

    def _top_posterior_of_features(self, params, features):
        return self.top_down.apply({"params": params["decoder"]}, features, method=TopDown.top_posterior)

    def posterior(self, params, x):
        """(mean, log_var) of the top group's q(z_1 | x) for a batch x."""
        return self._top_posterior_of_features(params, self._features(params, x))

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        """The top group's prior p(z_1) as a mixture (VampPrior: q(z_1 | u_k) at pseudo-inputs)."""

        def posterior_of(pseudo_inputs):
            features = self.bottom_up.apply({"params": params["encoder"]}, pseudo_inputs)
            return self._top_posterior_of_features(params, features)

        return priors_lib.components(self.prior, params["prior"], self.latent_shape, posterior_of)

    def prior_log_prob(self, params, z):
        """log p(z_1) of the top group for a batch z_1, shape (B,)."""
        components = self.prior_components(params)
        return jax.vmap(priors_lib.mixture_log_prob, in_axes=(None, 0))(components, z)

    # -- the ladder, with each group's draw chosen ------------------------------------------

    def _run(self, params, features, keys, keep_groups, temperature, prior_keys=None):
        """One top-down pass: groups g < keep_groups from the posterior (needs ``features``),
        the rest from the priors with their noise scaled by ``temperature``; posterior draws
        use ``keys``, prior draws ``prior_keys`` (default: the same keys)."""
        prior_keys = keys if prior_keys is None else prior_keys
        if keep_groups == 0:
            components = self.prior_components(params)
            sample_top = jax.vmap(priors_lib.mixture_sample, in_axes=(None, 0, None))
            z_top = sample_top(components, _group_keys(prior_keys, 0), temperature)

        def draw(g, posterior, prior):
            if g < keep_groups:
                return _gaussian_draw(*posterior, _group_keys(keys, g))
            if g == 0:
                return z_top
            return _gaussian_draw(*prior, _group_keys(prior_keys, g), temperature)

        return self._top_down(params, features, draw, keys.shape[0])

    def _top_log_prior_and_kl(self, params, z, mean, log_var, log_q):
        """log p(z_1) and KL(q(z_1|x) || p(z_1)): analytic for N(0, I), else log q - log p."""
        if isinstance(self.prior, StandardNormal):
            log_p = _sum_over_event(dist.standard_normal_log_prob(z))
            return log_p, _sum_over_event(dist.kl_standard_normal(mean, log_var))
        log_p = self.prior_log_prob(params, z)
        return log_p, log_q - log_p

    def infer(self, params, x, keys) -> LatentTerms:
        """z_g ~ q(z_g | x, z_<g) down the ladder, and per group the KL at that path:

        KL_g = sum over z_g's dimensions of kl_diag_gaussians(q_g, p_g)   (below the top),
        log q = sum_g log q(z_g | x, z_<g),   log p = sum_g log p(z_g | z_<g),
        ``kl_groups`` in top-down order (index 0 is z_1, with the model's prior).
        """
        out, records = self._run(params, self._features(params, x), keys, self.num_groups, 1.0)
        kl_groups, log_q, log_p = [], 0.0, 0.0
        for g, (z, (mean_q, log_var_q), prior) in enumerate(records):
            log_q_g = _sum_over_event(dist.diag_gaussian_log_prob(z, mean_q, log_var_q))
            if g == 0:
                log_p_g, kl_g = self._top_log_prior_and_kl(params, z, mean_q, log_var_q, log_q_g)
            else:
                log_p_g = _sum_over_event(dist.diag_gaussian_log_prob(z, *prior))
                kl_g = _sum_over_event(dist.kl_diag_gaussians(mean_q, log_var_q, *prior))
            kl_groups.append(kl_g)
            log_q, log_p = log_q + log_q_g, log_p + log_p_g
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
        is_int = isinstance(keep_groups, int) and not isinstance(keep_groups, bool)
        if not (is_int and 0 <= keep_groups <= self.num_groups):
            raise ValueError(f"keep_groups: expected an int in [0, {self.num_groups}], got {keep_groups!r}")
        x = jnp.asarray(x)
        if x.shape[1:] != tuple(self.data_shape) or x.shape[0] != keys.shape[0]:
            raise ValueError(
                f"x: expected a batch (B, *{self.data_shape}) with one key per example, "
                f"got x {x.shape} and keys {keys.shape}"
            )
        if prior_keys is not None and prior_keys.shape != keys.shape:
            raise ValueError(f"prior_keys: expected shape {keys.shape} like keys, got {prior_keys.shape}")
        features = self._features(params, x) if keep_groups else None
        return self._run(params, features, keys, keep_groups, temperature, prior_keys)[0]

    def decoder_output(self, params, z):
        """Decoder output with the top group z_1 = z given and every other group at its prior
        mean (the deterministic decoding of z_1, what ``vae_jax.decode`` gives)."""
        at_prior_mean = lambda g, posterior, prior: z if g == 0 else prior[0]
        return self._top_down(params, None, at_prior_mean, z.shape[0])[0]


def hierarchical_vae(
    data_shape=(32, 32, 3),
    widths=(32, 64, 128, 128),
    groups_per_stage=(0, 2, 4, 2),
    latent_channels=8,
    blocks_per_stage=1,
    likelihood: Likelihood = DiscretizedLogisticMixture(5),
    prior: Prior = StandardNormal(),
    activation="silu",
    dtype: Any = jnp.float32,
) -> HierarchicalVAE:
    """A ladder over stages of resolution H / 2**s with ``widths[s]`` channels (s = 0 finest).

    ``groups_per_stage[s]`` latent groups of ``latent_channels`` channels sit at stage s (an
    int: the same at every stage); the coarsest stage needs at least one (it holds z_1).
    The default, for 32x32 images: 8 groups at 4x4 (2), 8x8 (4) and 16x16 (2).
    """
    data_shape, widths = tuple(data_shape), tuple(widths)
    if isinstance(groups_per_stage, int):
        groups_per_stage = (groups_per_stage,) * len(widths)
    groups_per_stage = tuple(groups_per_stage)
    if len(data_shape) != 3:
        raise ValueError(f"data_shape: expected (height, width, channels), got {data_shape}")
    if len(groups_per_stage) != len(widths):
        raise ValueError(
            f"groups_per_stage: expected one count per stage ({len(widths)} widths), got {groups_per_stage}"
        )
    if any(n < 0 for n in groups_per_stage) or groups_per_stage[-1] < 1:
        raise ValueError(
            f"groups_per_stage: expected counts >= 0 with at least one group at the coarsest stage, "
            f"got {groups_per_stage}"
        )
    factor = 2 ** (len(widths) - 1)
    height, width, _ = data_shape
    if height % factor or width % factor:
        raise ValueError(
            f"data_shape {data_shape}: height and width must be divisible by 2**(len(widths)-1) = {factor}"
        )
    top_down = TopDown(
        data_shape,
        likelihood.params_per_subpixel,
        widths,
        groups_per_stage,
        latent_channels,
        blocks_per_stage,
        activation,
        dtype,
    )
    group_shapes = tuple(
        (height // 2**stage, width // 2**stage, latent_channels) for stage in top_down.group_stages()
    )
    return HierarchicalVAE(
        bottom_up=BottomUp(widths, blocks_per_stage, activation, dtype),
        top_down=top_down,
        likelihood=likelihood,
        data_shape=data_shape,
        group_shapes=group_shapes,
        prior=prior,
    )
