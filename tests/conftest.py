"""Shared tiny configurations and helpers: small enough that a run compiles and trains in seconds."""

import dataclasses

import pytest

from vae_jax import config as config_lib

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


def tiny_run_config(**overrides) -> config_lib.Config:
    return config_lib.preset("photos", {**TINY_RUN, **overrides})


@pytest.fixture
def tiny_config():
    return tiny_run_config


def quiet(*_args, **_kwargs):
    """A ``log`` that prints nothing."""


def replace(config, **changes):
    return dataclasses.replace(config, **changes)
