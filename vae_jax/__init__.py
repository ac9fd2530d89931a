"""vae-jax: Variational Autoencoders as small pure JAX functions.

model = vae_jax.conv_vae()                      # a frozen, hashable description
params = vae_jax.init(model, key)
vae_jax.elbo(model, params, x, key)             # nats per example

Every function a user calls follows one rule: ``(model, params, data..., key, *, options)``.
"""

import jax

from vae_jax import pretrained, trained
from vae_jax.architectures import conv_vae, linear_gaussian, mlp_784_400_20, mlp_784_500_20, mlp_vae
from vae_jax.diagnostics import active_units, bits_per_dim_split, kl_per_group
from vae_jax.evaluation import bits_per_dim, log_likelihood
from vae_jax.exact import exact_log_marginal, exact_posterior, optimal_encoder_params
from vae_jax.hierarchical import HierarchicalVAE, hierarchical_vae
from vae_jax.likelihoods import (
    Bernoulli,
    CoupledLogisticMixture,
    CrossChannelLocalMixture,
    DiscreteLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    Gaussian,
    Likelihood,
    LocalAutoregressiveMixture,
)
from vae_jax.model import VAE, HierarchicalModel, LatentTerms, LatentVariableModel
from vae_jax.objectives import (
    ElboTerms,
    decode,
    elbo,
    elbo_terms,
    encode,
    iwae_bound,
    log_importance_weights,
    reconstruct,
    sample,
    weighted_elbo,
)
from vae_jax.priors import MixtureOfGaussians, StandardNormal, VampPrior
from vae_jax.stochastic_mlp import StochasticMLPVAE, stochastic_mlp_vae


def init(model, key):
    """A params pytree ``{"encoder", "decoder", "prior"}`` for ``model``, drawn from ``key``.

    Compiled: Flax's init runs the whole forward pass, and op by op that costs twice a compile;
    the draws are the same bits either way.
    """
    from vae_jax import checks

    checks.check_key("key", key)
    return _compiled_init(model, key)


_compiled_init = jax.jit(lambda model, key: model.init(key), static_argnums=0)


__all__ = [
    "VAE",
    "Bernoulli",
    "CoupledLogisticMixture",
    "CrossChannelLocalMixture",
    "DiscreteLikelihood",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "ElboTerms",
    "Gaussian",
    "HierarchicalModel",
    "HierarchicalVAE",
    "LatentTerms",
    "LatentVariableModel",
    "Likelihood",
    "LocalAutoregressiveMixture",
    "MixtureOfGaussians",
    "StandardNormal",
    "StochasticMLPVAE",
    "VampPrior",
    "active_units",
    "bits_per_dim",
    "bits_per_dim_split",
    "conv_vae",
    "decode",
    "elbo",
    "elbo_terms",
    "encode",
    "exact_log_marginal",
    "exact_posterior",
    "hierarchical_vae",
    "init",
    "iwae_bound",
    "kl_per_group",
    "linear_gaussian",
    "log_importance_weights",
    "log_likelihood",
    "mlp_784_400_20",
    "mlp_784_500_20",
    "mlp_vae",
    "optimal_encoder_params",
    "pretrained",
    "reconstruct",
    "sample",
    "stochastic_mlp_vae",
    "trained",
    "weighted_elbo",
]
