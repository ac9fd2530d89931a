"""The models benchmarked, each built from the library's own preset so its train step is the one
``vae-jax train`` would run, and the test images fed to them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from vae_jax import config as config_lib

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    preset: str
    overrides: tuple = ()  # (key, value) pairs on top of the preset
    data_shape: tuple = (28, 28, 1)
    description: str = ""


MODELS = {
    "mlp-784-400-20": ModelSpec(
        "mnist", (), (28, 28, 1), "Kingma & Welling's 784-400-20 Bernoulli MLP (preset mnist)"
    ),
    "mlp-784-500-20": ModelSpec(
        "mnist", (("hidden", (500,)),), (28, 28, 1), "Flax examples' 784-500-20 Bernoulli MLP"
    ),
    "conv": ModelSpec(
        "photos", (), (32, 32, 3), "ResNet conv VAE on 2x2 patches, 32x32x3, coupled mixture (preset photos)"
    ),
    "conv-full-res": ModelSpec(
        "photos", (("patch_size", 1), ("widths", (32, 64, 128))), (32, 32, 3),
        "the same at full resolution, 32-64-128 (the photos preset before patches)",
    ),
    "hvae": ModelSpec(
        "photos-hvae", (), (32, 32, 3), "hierarchical VAE on 2x2 patches, 5 groups, 32x32x3 (preset photos-hvae)"
    ),
}


class Skip(Exception):
    """A benchmark that cannot run here, with the reason recorded in the results."""


def build(name: str, data_shape=None, **overrides):
    """``(config, model)`` for a model name, with config overrides (e.g. ``batch_size``)."""
    spec = MODELS[name]
    config = config_lib.preset(spec.preset, {**dict(spec.overrides), **overrides})
    shape = tuple(data_shape or spec.data_shape)
    model = config_lib.build_model(config, shape)
    return config, model


def synthetic_images(count: int, shape, seed: int = 0) -> np.ndarray:
    """uint8 images; dense-network timings do not depend on the pixel values."""
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def test_images(count: int, shape) -> tuple[np.ndarray, str]:
    """``count`` test images of ``shape``: real Fashion-MNIST test images (10,000 of them, from
    Debian's dataset-fashion-mnist) for 28x28x1 when installed, else synthetic."""
    if tuple(shape) == (28, 28, 1) and FASHION_MNIST_DIR.is_dir():
        try:
            from vae_jax.data import load_source

            images = load_source(f"idx:{FASHION_MNIST_DIR}").test_images()
            reps = math.ceil(count / len(images))
            return np.concatenate([images] * reps)[:count], "fashion-mnist test set"
        except (OSError, ValueError) as error:  # a damaged install: say so, time on synthetic data
            print(f"benchmarks: could not read {FASHION_MNIST_DIR} ({error}); using synthetic images")
    return synthetic_images(count, shape, seed=1), "synthetic uint8"
