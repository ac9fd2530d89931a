"""Ready-made model descriptions: the classic MLP VAEs, a convolutional VAE for photos,
and the linear-Gaussian VAE whose marginal likelihood is known in closed form.

Every builder takes the data shape, then keyword arguments in one order across the families:
sizes (``hidden``/``widths``, ``blocks_per_stage``, latent sizes), ``likelihood``, ``prior``,
``activation``, ``dtype``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from vae_jax.likelihoods import Bernoulli, DiscretizedLogisticMixture, Gaussian, Likelihood
from vae_jax.model import VAE
from vae_jax.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae_jax.priors import Prior, StandardNormal


def mlp_vae(
    data_shape=(28, 28, 1),
    *,
    hidden=(400,),
    latent_dim=20,
    likelihood: Likelihood = Bernoulli(),
    prior: Prior = StandardNormal(),
    activation="relu",
    dtype: Any = jnp.float32,
) -> VAE:
    """Fully connected encoder and decoder, mirrored hidden widths."""
    data_shape, hidden = tuple(data_shape), tuple(hidden)
    return VAE(
        encoder=MLPEncoder(hidden, latent_dim, activation, dtype),
        decoder=MLPDecoder(likelihood.params_shape(data_shape), hidden[::-1], activation, dtype),
        likelihood=likelihood,
        data_shape=data_shape,
        latent_shape=(latent_dim,),
        prior=prior,
    )


def mlp_784_400_20(**kwargs) -> VAE:
    """Kingma & Welling (2014)'s MNIST model: 784-400-20, Bernoulli pixels."""
    return mlp_vae((28, 28, 1), hidden=(400,), latent_dim=20, **kwargs)


def mlp_784_500_20(**kwargs) -> VAE:
    """The Flax examples' MNIST VAE: 784-500-20, Bernoulli pixels."""
    return mlp_vae((28, 28, 1), hidden=(500,), latent_dim=20, **kwargs)


def check_divisible(data_shape, num_stages, patch_size=1):
    """Raise unless H and W divide by ``patch_size`` and then halve cleanly ``num_stages - 1`` times."""
    if not (isinstance(patch_size, int) and patch_size >= 1):
        raise ValueError(f"patch_size: expected an integer >= 1, got {patch_size!r}")
    factor = patch_size * 2 ** (num_stages - 1)
    if len(data_shape) != 3 or data_shape[0] % factor or data_shape[1] % factor:
        raise ValueError(
            f"data_shape {data_shape}: expected (height, width, channels) with height and width "
            f"divisible by patch_size * 2**(len(widths)-1) = {factor}"
        )
    return factor


def conv_vae(
    data_shape=(32, 32, 3),
    *,
    widths=(64, 128, 256),
    blocks_per_stage=2,
    latent_channels=16,
    likelihood: Likelihood = DiscretizedLogisticMixture(5),
    prior: Prior = StandardNormal(),
    activation="silu",
    dtype: Any = jnp.float32,
    patch_size: int = 1,
    output_kernel: int = 3,
) -> VAE:
    """ResNet encoder/decoder with a spatial latent at 1/(patch_size 2^(len(widths)-1)) resolution
    (``patch_size``: see ``networks.conv``); the decoder's last convolution is ``output_kernel``
    square."""
    data_shape, widths = tuple(data_shape), tuple(widths)
    factor = check_divisible(data_shape, len(widths), patch_size)
    height, width, _ = data_shape
    params_shape = likelihood.params_shape(data_shape)
    return VAE(
        encoder=ConvEncoder(widths, blocks_per_stage, latent_channels, activation, dtype, patch_size),
        decoder=ConvDecoder(params_shape, widths, blocks_per_stage, activation, dtype, patch_size, output_kernel),
        likelihood=likelihood,
        data_shape=data_shape,
        latent_shape=(height // factor, width // factor, latent_channels),
        prior=prior,
    )


def linear_gaussian(data_dim: int, latent_dim: int, obs_var: float = 0.1) -> VAE:
    """p(z) = N(0, I), p(x|z) = N(W z + b, obs_var I), q(z|x) = N(A x + c, diag exp(D x + d)).

    Linear encoder and decoder on real-valued data, so the marginal
    p(x) = N(b, W W^T + obs_var I) is exact (see ``exact_log_marginal``); the model's
    ``likelihood.obs_var`` holds the variance.
    """
    return mlp_vae((data_dim,), hidden=(), latent_dim=latent_dim, likelihood=Gaussian(obs_var, support="real"))
