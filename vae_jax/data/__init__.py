"""Data: sources yielding uint8 NHWC NumPy batches (and, from ``vae_jax.images``, the JAX
transforms that turn them into what a likelihood reads).

    source = load_source("photos")                      # or "tfds:mnist", "folder:DIR", "idx:DIR"
    x = source.train_batch(step, batch_size=64, seed=0)  # uint8 (64, 32, 32, 3), pure in its args
    x = prepare(x, "dequantized", key)                   # float32 in [0, 1)

Importing this package is cheap: TFDS, scikit-image, scikit-learn and Pillow are imported only
by the source that needs them.
"""

from vae_jax.data.errors import DatasetNotFoundError, DataSourceError, IdxFormatError
from vae_jax.data.load import SPECS, load_source
from vae_jax.data.source import ArraySource, DataSource, epoch_permutation
from vae_jax.images import (
    LIKELIHOOD_INPUTS,
    dequantize,
    dynamic_binarize,
    prepare,
    static_binarize,
    to_discrete,
    to_unit_interval,
)

__all__ = [
    "LIKELIHOOD_INPUTS",
    "SPECS",
    "ArraySource",
    "DataSource",
    "DataSourceError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "dequantize",
    "dynamic_binarize",
    "epoch_permutation",
    "load_source",
    "prepare",
    "static_binarize",
    "to_discrete",
    "to_unit_interval",
]
