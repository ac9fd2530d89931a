"""The interface every model implements, and the one-group VAE.

A model is a frozen, hashable description (networks, likelihood, prior, shapes) holding no
parameters: ``init`` gives the params pytree ``{"encoder": ..., "decoder": ..., "prior": ...}``,
and because the description is hashable it can be a static argument of ``jax.jit``.

The objectives (``vae_jax.objectives``), evaluation, diagnostics and apps are written against
``LatentVariableModel`` alone; a model with several latent groups adds partial resampling
(``HierarchicalModel``). A latent ``z`` is one array for a one-group model and a tuple of arrays,
one per group in top-down order (index 0 the top), for a hierarchy: ``latent_template`` gives its
structure. Every method takes a batch; ``keys`` are one PRNG key per example.

A model's ``likelihood`` follows the likelihood contract, ``Likelihood`` (declared with the
likelihoods, in ``vae_jax.likelihoods.contract``, and imported here): the decoder's output
shape, one log-probability per pixel, the context each pixel reads, the input kind, and for
8-bit pixels (``DiscreteLikelihood``) the tables and order a lossless coder codes with.

=========================  ============================================================
``posterior(params, x)``   (mean, log_var) of q(z|x); for a hierarchy each group's at the path
                           of posterior means (what ``encode`` returns; ``decode`` of the mean
                           is the deterministic reconstruction)
``infer(params, x, keys)`` z ~ q(z|x) and what the bounds need of it: ``LatentTerms``
``decoder_output(p, z)``   the likelihood's parameters of p(x|z)
``prior_log_prob(p, z)``   log p(z), shape (B,)
``prior_components(p)``    the top group's prior p(z_top) as a mixture of diagonal Gaussians
``generate(p, keys, T)``   the likelihood's parameters at z ~ p(z), noise scaled by T
=========================  ============================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax import priors as priors_lib
from vae_jax.likelihoods import DiscreteLikelihood, Likelihood  # noqa: F401 (the contracts, next to the model's)
from vae_jax.priors import Prior, StandardNormal

Params = Any
Latent = Any  # one array, or a tuple of arrays (one per group, top-down)


class LatentTerms(NamedTuple):
    """One posterior draw per example, and what the bounds need of it.

    decoder_out: (B, *params_shape), the likelihood's parameters at the drawn z.
    kl_groups: one (B,) array per latent group, top-down: KL(q || p) of that group, analytic
        where the prior allows it, else the single-sample estimate log q(z_g|.) - log p(z_g|.).
    log_q, log_p: (B,), log q(z|x) and log p(z) at the drawn z (for importance weights).
    """

    decoder_out: jax.Array
    kl_groups: tuple[jax.Array, ...]
    log_q: jax.Array
    log_p: jax.Array


class LatentVariableModel(Protocol):
    """p(x, z) = p(z) p(x|z) with an amortized q(z|x): what every public function needs."""

    likelihood: Likelihood
    prior: Prior
    data_shape: tuple[int, ...]

    @property
    def num_groups(self) -> int: ...

    @property
    def latent_template(self) -> Any:
        """The latent's structure: a ``jax.ShapeDtypeStruct`` per group (one, or a tuple)."""

    def init(self, key) -> Params: ...

    def posterior(self, params, x) -> tuple[Latent, Latent]: ...

    def infer(self, params, x, keys) -> LatentTerms: ...

    def decoder_output(self, params, z) -> jax.Array: ...

    def prior_log_prob(self, params, z) -> jax.Array: ...

    def prior_components(self, params) -> priors_lib.MixtureComponents: ...

    def generate(self, params, keys, temperature=1.0) -> jax.Array: ...


@runtime_checkable
class HierarchicalModel(LatentVariableModel, Protocol):
    """A top-down model of several latent groups z_1 (top) .. z_G: p(z_1) prod_{g>1} p(z_g | z_<g)
    p(x | z) and q(z | x) = prod_g q(z_g | x, z_<g) in the same order. It can keep the top groups
    of a posterior path and redraw the rest from their priors, and it runs its top-down pass one
    group at a time, for whoever must fix z_g before it can ask for group g + 1 (bits-back coding):

        features = bottom_up_features(params, x)
        state = top_down_start(params, B, (H, W))
        for g in 0..G-1:
            step, prior_g, posterior_g = top_down_to_group(params, state, features, g)
            z_g = (drawn or coded between prior_g and posterior_g)
            state = top_down_merge(params, step, z_g, g)
        decoder_output = top_down_output(params, state)

    The states are the model's own (pass them on, do not read them). A model whose posterior runs
    the other way (``StochasticMLPVAE``: q(z_2 | z_1), bottom-up) has ``generate_from`` but not
    these steps, so it is not a ``HierarchicalModel`` and the bits-back coder refuses it.
    """

    def generate_from(self, params, x, keys, keep_groups: int, temperature=1.0, prior_keys=None) -> jax.Array:
        """Decoder output with the top ``keep_groups`` groups drawn from q(.|x) (with ``keys``, as
        ``infer`` draws them) and the others from their priors at ``temperature`` (with
        ``prior_keys``, default ``keys``)."""

    def bottom_up_features(self, params, x) -> Any:
        """What the posteriors q(z_g | x, z_<g) read of x, computed once for the whole pass."""

    def top_down_start(self, params, batch_size: int, image_hw: tuple[int, int]) -> Any:
        """The top-down state before the first group, for ``batch_size`` images of ``(H, W)``."""

    def top_down_to_group(self, params, state, features, g: int) -> tuple[Any, Any, Any]:
        """``(step, prior, posterior)`` at group g from the state after group g - 1's merge
        (``top_down_start``'s for g = 0): the state there (for ``top_down_merge``), p(z_g | z_<g) as
        (mean, log_var) (None for g = 0: the top group's prior is ``prior_components``), and
        q(z_g | x, z_<g) as (mean, log_var) given ``features`` (None when ``features`` is None)."""

    def top_down_posterior(self, params, step, features, g: int) -> Any:
        """q(z_g | x, z_<g) as (mean, log_var) at ``step`` (``top_down_to_group``'s, called with or
        without ``features``): what ``top_down_to_group`` gives as the posterior with ``features``."""

    def top_down_merge(self, params, step, z, g: int) -> Any:
        """The state after merging group g's value ``z`` into ``step`` (``top_down_to_group``'s)."""

    def top_down_output(self, params, state) -> jax.Array:
        """p(x | z)'s parameters, as ``decoder_output`` gives them, from the state after the last merge."""


def latent_groups(z) -> tuple:
    """The groups of a latent, top-down: ``(z,)`` for one array."""
    return tuple(z) if isinstance(z, (tuple, list)) else (z,)


def as_latent(groups):
    """One array for a single group, else the tuple of groups."""
    groups = tuple(groups)
    return groups[0] if len(groups) == 1 else groups


def encoder_input(input_kind, x):
    """What the encoder sees: 8-bit integers are rescaled to [-1, 1], other data as given."""
    x = jnp.asarray(x, jnp.float32)
    return x / 127.5 - 1.0 if input_kind == "discrete" else x


@dataclasses.dataclass(frozen=True)
class VAE:
    """One group of latents z with shape ``latent_shape``: q(z|x) p(x|z) p(z)."""

    encoder: nn.Module
    decoder: nn.Module
    likelihood: Likelihood
    data_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    prior: Prior = StandardNormal()

    num_groups = 1

    @property
    def latent_template(self):
        return jax.ShapeDtypeStruct(self.latent_shape, jnp.float32)

    def init(self, key):
        encoder_key, decoder_key, prior_key = jax.random.split(key, 3)
        x = jnp.zeros((1, *self.data_shape), jnp.float32)
        z = jnp.zeros((1, *self.latent_shape), jnp.float32)
        params = {
            "encoder": self.encoder.init(encoder_key, x)["params"],
            "decoder": self.decoder.init(decoder_key, z)["params"],
            "prior": self.prior.init(prior_key, self.latent_shape, self.data_shape),
        }
        check_network_shapes(self, params)
        return params

    def posterior(self, params, x):
        features = encoder_input(self.likelihood.input_kind, x)
        return self.encoder.apply({"params": params["encoder"]}, features)

    def decoder_output(self, params, z):
        return self.decoder.apply({"params": params["decoder"]}, z)

    def prior_components(self, params) -> priors_lib.MixtureComponents:
        posterior_of = lambda u: self.encoder.apply({"params": params["encoder"]}, u)
        return priors_lib.components(self.prior, params["prior"], self.latent_shape, posterior_of)

    def prior_log_prob(self, params, z):
        return priors_lib.batch_log_prob(self.prior_components(params), z)

    def infer(self, params, x, keys) -> LatentTerms:
        mean, log_var = self.posterior(params, x)
        z = jax.vmap(dist.diag_gaussian_sample)(mean, log_var, keys)
        log_q, log_p, kl = priors_lib.top_terms(self.prior, lambda: self.prior_components(params), z, mean, log_var)
        return LatentTerms(self.decoder_output(params, z), (kl,), log_q, log_p)

    def generate(self, params, keys, temperature=1.0):
        return self.decoder_output(params, priors_lib.batch_sample(self.prior_components(params), keys, temperature))


def check_network_shapes(model, params):
    """Fail at init, with the shapes named, if the networks do not fit the description."""
    x = jnp.zeros((1, *model.data_shape), jnp.float32)
    mean, log_var = jax.eval_shape(lambda p: model.posterior(p, x), params)
    want = jax.tree_util.tree_map(lambda t: (1, *t.shape), model.latent_template)
    have = jax.tree_util.tree_map(lambda a: a.shape, mean)
    if have != want or jax.tree_util.tree_map(lambda a: a.shape, log_var) != want:
        raise ValueError(f"encoder returns a posterior of shapes {have}, expected (batch, *latent_shape) = {want}")
    z = jax.tree_util.tree_map(lambda t: jnp.zeros((1, *t.shape), t.dtype), model.latent_template)
    out = jax.eval_shape(lambda p: model.decoder_output(p, z), params)
    want_out = (1, *model.likelihood.params_shape(model.data_shape))
    if out.shape != want_out:
        raise ValueError(f"decoder returns {out.shape}, expected (batch, *params_shape) = {want_out}")
