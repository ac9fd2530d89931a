"""The Gaussian head every encoder ends in: features -> (mean, log_var) of a diagonal Gaussian."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vae_jax.networks.activations import accumulation_dtype, soft_clamp


def gaussian_head(h, size: int, *, conv: bool = False, log_var: str = "clamped",
                  kernel_init: Any = nn.linear.default_kernel_init, dtype: Any = jnp.float32):  # fmt: skip
    """(mean, log_var) from two linear maps of ``h``, created in the calling module's scope (call
    it from an ``nn.compact`` method), named ``mean`` and ``log_var`` (or ``log_sigma``).

    ``conv=True`` makes them 1x1 convolutions (a spatial latent); otherwise Dense layers on the
    flattened features. The log-variance is soft-clamped (``soft_clamp``: NVAE's bound on
    exp(+-log_var)) unless ``log_var="log_sigma"``: then the second map is log sigma and
    log_var = 2 log sigma, unbounded (Burda et al.'s sigma = exp(linear)). Outputs are float32
    (or wider) whatever the compute dtype.
    """
    if conv:
        layer = lambda name: nn.Conv(size, (1, 1), dtype=dtype, kernel_init=kernel_init, name=name)
    else:
        h = h.reshape(h.shape[0], -1)
        layer = lambda name: nn.Dense(size, dtype=dtype, kernel_init=kernel_init, name=name)
    out_dtype = accumulation_dtype(dtype)
    mean = layer("mean")(h).astype(out_dtype)
    if log_var == "log_sigma":
        return mean, 2.0 * layer("log_sigma")(h).astype(out_dtype)
    if log_var != "clamped":
        raise ValueError(f"log_var: expected 'clamped' or 'log_sigma', got {log_var!r}")
    return mean, soft_clamp(layer("log_var")(h).astype(out_dtype))
