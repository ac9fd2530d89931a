"""Flax linen encoders and decoders.

Encoders map a batch of images ``(B, *data_shape)`` to the posterior's ``(mean, log_var)``,
each ``(B, *latent_shape)``, through ``gaussian_head``. Decoders map ``(B, *latent_shape)`` to
the likelihood's parameters ``(B, *params_shape)``.
"""

from vae_jax.networks.conv import BottomUp, ConvDecoder, ConvEncoder, ResBlock
from vae_jax.networks.heads import gaussian_head
from vae_jax.networks.ladder import TopDown, TopDownGroup
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
    "gaussian_head",
]
