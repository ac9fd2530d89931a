"""Shared tiny models, data and run configurations: small enough to compile and run in seconds.

``FAMILIES`` holds one tiny model per family the library builds; the conformance suite
(test_objectives.py) runs every public function over all of them. ``LIKELIHOOD_FAMILIES`` puts
the likelihoods whose pixels read more than z (the channel-coupled, local and cross-channel
mixtures) on the cheapest model; the suite runs them in full with ``-m slow`` and one fast case
each by default.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Two CPU devices (before JAX starts its backend), so the pmap variants of the conformance suite
# have devices to map over; everything else runs on the first.
chex.set_n_cpu_devices(2)

# Compiling is most of this suite's time, and the programs are tiny: without LLVM's optimisation
# passes XLA compiles them 3-4x faster (measured on the conformance models) and they still run in
# milliseconds. CLI subprocesses inherit the flag. Results differ from optimised code only by float
# rounding, which every tolerance here allows; bit-identity tests compare runs of the same build.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
).strip()
# Many tests build the same tiny models and runs, and each builds its own jitted functions, so
# the same programs compile again and again: JAX's persistent compilation cache (keyed by the
# program and its compile options) shares them between tests, xdist workers and CLI subprocesses
# (which read the environment). A cached executable is the one a fresh compile makes.
COMPILATION_CACHE = {
    "jax_compilation_cache_dir": os.path.join(os.path.dirname(os.path.dirname(__file__)), ".pytest_cache", "jax"),
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}
for option, value in COMPILATION_CACHE.items():
    os.environ.setdefault(option.upper(), str(value))
    jax.config.update(option, type(value)(os.environ[option.upper()]))

import vae_jax
from vae_jax import config as config_lib

KEY = jax.random.key(0)

FAMILIES = {
    "mlp_bernoulli": lambda: vae_jax.mlp_vae((6, 6, 1), hidden=(16,), latent_dim=4),
    "mlp_gaussian": lambda: vae_jax.mlp_vae((6, 6, 1), hidden=(16,), latent_dim=4, likelihood=vae_jax.Gaussian()),
    "conv_mixture": lambda: vae_jax.conv_vae(
        (8, 8, 3), widths=(8, 16), blocks_per_stage=1, latent_channels=2, likelihood=vae_jax.DiscretizedLogisticMixture(3)
    ),
    "hierarchical": lambda: vae_jax.hierarchical_vae(
        (8, 8, 3), widths=(8, 8), blocks_per_stage=0, latent_channels=2, groups_per_stage=(1, 2),
        likelihood=vae_jax.DiscretizedLogistic(), patch_size=2,  # space-to-depth: the photos-hvae layout
    ),
    "stochastic_mlp": lambda: vae_jax.stochastic_mlp_vae((4, 4, 1), widths=(8, 6), latent_sizes=(5, 3)),
}
# 4x4 images: every pixel position a neighbour can fall outside of (top row, left and right columns).
LIKELIHOOD_FAMILIES = {
    "mlp_coupled": lambda: vae_jax.mlp_vae((4, 4, 3), hidden=(16,), latent_dim=3, likelihood=vae_jax.CoupledLogisticMixture(2)),
    "mlp_local": lambda: vae_jax.mlp_vae((4, 4, 3), hidden=(16,), latent_dim=3, likelihood=vae_jax.LocalAutoregressiveMixture(2)),
    "mlp_local_cross": lambda: vae_jax.mlp_vae(
        (4, 4, 3), hidden=(16,), latent_dim=3, likelihood=vae_jax.CrossChannelLocalMixture(2)
    ),
}


def data_for(model, n, seed=0):
    """``n`` random examples in the model's input kind."""
    rng = np.random.default_rng(seed)
    shape = (n, *model.data_shape)
    kind = model.likelihood.input_kind
    if kind == "binary":
        return jnp.asarray(rng.integers(0, 2, shape), jnp.float32)
    if kind in ("unit", "real"):
        return jnp.asarray(rng.uniform(size=shape), jnp.float32)
    return jnp.asarray(rng.integers(0, 256, shape), jnp.int32)


def perturbed(params, seed, scale=0.05):
    """Random offsets on every parameter: zero-initialised heads and residual branches then do
    something, so tests see non-trivial priors and posteriors."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [a + scale * jnp.asarray(rng.normal(size=a.shape), a.dtype) for a in leaves]
    )


def _model_and_params(model, seed=0):
    return model, vae_jax.init(model, jax.random.key(seed))


@pytest.fixture(scope="session")
def discrete_mlp():
    """(model, params): an MLP on 8x8x3 8-bit images with a discretized logistic."""
    return _model_and_params(vae_jax.mlp_vae((8, 8, 3), hidden=(32,), latent_dim=4, likelihood=vae_jax.DiscretizedLogistic()))


@pytest.fixture(scope="session")
def local_conv():
    """(model, params): a small convolutional VAE on 8x8x3 images with the local autoregressive
    mixture (each pixel reads its left, up and up-left neighbours)."""
    return _model_and_params(
        vae_jax.conv_vae((8, 8, 3), widths=(8, 16), latent_channels=2, likelihood=vae_jax.LocalAutoregressiveMixture(2))
    )


@pytest.fixture(scope="session")
def gaussian_mlp_2d():
    """(model, params): an MLP with a 2-D latent on 4x4x1 images in [0, 1], Gaussian likelihood."""
    return _model_and_params(
        vae_jax.mlp_vae((4, 4, 1), hidden=(16,), latent_dim=2, likelihood=vae_jax.Gaussian(0.05))
    )


# An MLP on 8x8 crops of the embedded photos: the cheapest full run (data, training, evaluation,
# checkpoints, pictures) the library can do.
TINY_RUN = dict(
    model="mlp",
    hidden=(16,),
    latent_dim=2,
    crop_size=8,
    mixture_components=1,
    batch_size=8,
    steps=20,
    steps_per_dispatch=5,
    log_every=5,
    eval_every=10,
    checkpoint_every=10,
    eval_batch_size=64,
    grid_size=2,
)
# The same with the default convolutional model, as small as it goes; one step per dispatch, because
# convolutional dispatches are unrolled and compiling five steps costs five times one.
TINY_CONV_RUN = dict(
    TINY_RUN, model="conv", crop_size=16, widths=(8, 16), latent_channels=2, mixture_components=2, steps_per_dispatch=1
)


def tiny_run_config(**overrides) -> config_lib.Config:
    return config_lib.preset("photos", {**TINY_RUN, **overrides})


def tiny_conv_config(**overrides) -> config_lib.Config:
    return config_lib.preset("photos", {**TINY_CONV_RUN, **overrides})


def quiet(*_args, **_kwargs):
    """A ``log`` that prints nothing."""
