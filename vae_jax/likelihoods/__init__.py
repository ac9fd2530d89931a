"""Observation models p(x | z): how a decoder's output becomes a distribution over pixels.

Every likelihood follows one contract (``Likelihood``, ``DiscreteLikelihood``; ``contract``): it
says what the decoder must emit (``params_shape``), what the data must look like
(``input_kind``: see ``vae_jax.images.prepare``), what each pixel reads besides z (``context``),
and scores one number per pixel (``log_prob``). Each is registered under the name a
configuration's ``likelihood`` field uses (``REGISTRY``):

============  ==============================  =====================================================
name          class                           context
============  ==============================  =====================================================
bernoulli     ``Bernoulli``                   none (each sub-pixel alone)
gaussian      ``Gaussian``                    none
logistic      ``DiscretizedLogistic``         none
dlm           ``DiscretizedLogisticMixture``  none
coupled       ``CoupledLogisticMixture``      the pixel's earlier channels
local         ``LocalAutoregressiveMixture``  and the same channel of its causal neighbours
local-cross   ``CrossChannelLocalMixture``    and the earlier channels' neighbours too
============  ==============================  =====================================================

One module per family: ``factorized`` (the first four), ``coupled``, ``local``; ``context`` holds
what a pixel may read and the orders that follow from it, ``logistic`` the NumPy float64 tables a
coder codes with.
"""

from vae_jax.likelihoods.context import (
    CAUSAL_NEIGHBOURS,
    CROSS_CHANNEL_PAIRS,
    Context,
    causal_neighbour_centres,
    neighbour_values,
    wavefront,
)
from vae_jax.likelihoods.contract import (
    INPUT_KINDS,
    REGISTRY,
    DiscreteLikelihood,
    Likelihood,
    LikelihoodBase,
    from_name,
    register,
    registered_name,
)
from vae_jax.likelihoods.coupled import CoupledLogisticMixture
from vae_jax.likelihoods.factorized import (
    GAUSSIAN_LOG_VAR_RANGE,
    Bernoulli,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    Gaussian,
    IndependentChannels,
    PerSubpixel,
)
from vae_jax.likelihoods.local import CrossChannelLocalMixture, LocalAutoregressiveMixture
from vae_jax.likelihoods.logistic import MAX_LOGISTIC_LOG_SCALE, MIN_LOGISTIC_LOG_SCALE

__all__ = [
    "CAUSAL_NEIGHBOURS",
    "CROSS_CHANNEL_PAIRS",
    "GAUSSIAN_LOG_VAR_RANGE",
    "INPUT_KINDS",
    "MAX_LOGISTIC_LOG_SCALE",
    "MIN_LOGISTIC_LOG_SCALE",
    "REGISTRY",
    "Bernoulli",
    "Context",
    "CoupledLogisticMixture",
    "CrossChannelLocalMixture",
    "DiscreteLikelihood",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "Gaussian",
    "IndependentChannels",
    "Likelihood",
    "LikelihoodBase",
    "LocalAutoregressiveMixture",
    "PerSubpixel",
    "causal_neighbour_centres",
    "from_name",
    "neighbour_values",
    "register",
    "registered_name",
    "wavefront",
]
