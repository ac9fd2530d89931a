"""Flax linen encoders and decoders.

Encoders map a batch of images ``(B, *data_shape)`` to the posterior's ``(mean, log_var)``,
each ``(B, *latent_shape)``. Decoders map ``(B, *latent_shape)`` to the likelihood's
parameters ``(B, *data_shape, params_per_subpixel)``.
"""

from vae_jax.networks.conv import ConvDecoder, ConvEncoder, ResBlock
from vae_jax.networks.ladder import BottomUp, TopDown, TopDownGroup
from vae_jax.networks.mlp import MLPDecoder, MLPEncoder

__all__ = [
    "BottomUp",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "ResBlock",
    "TopDown",
    "TopDownGroup",
]
