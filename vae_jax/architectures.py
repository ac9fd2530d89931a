"""Ready-made model descriptions: the classic MLP VAEs, a convolutional VAE for photos,
and the linear-Gaussian VAE whose marginal likelihood is known in closed form.

Every builder takes the data shape, then keyword arguments in one order across the families:
sizes (``hidden``/``widths``, ``blocks_per_stage``, latent sizes), ``likelihood``, ``prior``,
``activation``, ``dtype``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from vae_jax import checks
from vae_jax.likelihoods import Bernoulli, DiscretizedLogisticMixture, Gaussian, Likelihood
from vae_jax.model import VAE
from vae_jax.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae_jax.networks.activations import ACTIVATIONS
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
    data_shape = checks.check_data_shape(data_shape)
    hidden = checks.check_sizes("hidden", hidden, allow_empty=True)
    latent_dim = checks.check_count("latent_dim", latent_dim)
    check_parts(likelihood, prior, activation)
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


def check_parts(likelihood, prior, activation):
    """The arguments every builder shares (a builder without a prior passes its default)."""
    checks.check_part("likelihood", likelihood, "vae_jax.Bernoulli()", ("params_shape", "input_kind"))
    checks.check_part("prior", prior, "vae_jax.StandardNormal()", ("init",))
    checks.check_choice("activation", activation, ACTIVATIONS)


def check_conv_sizes(data_shape, widths, blocks_per_stage, latent_channels):
    """The sizes the convolutional builders share, checked; returns them as tuples and ints."""
    return (
        checks.check_data_shape(data_shape, "(height, width, channels)"),
        checks.check_sizes("widths", widths),
        checks.check_count("blocks_per_stage", blocks_per_stage, 0),
        checks.check_count("latent_channels", latent_channels),
    )


def check_divisible(data_shape, num_stages, patch_size=1):
    """Raise unless H and W divide by ``patch_size`` and then halve cleanly ``num_stages - 1`` times."""
    patch_size = checks.check_count("patch_size", patch_size)
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
    data_shape, widths, blocks_per_stage, latent_channels = check_conv_sizes(
        data_shape, widths, blocks_per_stage, latent_channels
    )
    output_kernel = checks.check_count("output_kernel", output_kernel)
    check_parts(likelihood, prior, activation)
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
    data_dim = checks.check_count("data_dim", data_dim)
    return mlp_vae((data_dim,), hidden=(), latent_dim=latent_dim, likelihood=Gaussian(obs_var, support="real"))
