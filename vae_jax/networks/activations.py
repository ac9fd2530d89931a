"""Activations by name, so a network's configuration stays plain, hashable data."""

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "softplus": nn.softplus,
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": nn.gelu,
    "elu": nn.elu,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def accumulation_dtype(compute_dtype):
    """Networks may compute in bfloat16, but hand float32 (or wider) to the likelihood and KL."""
    return jnp.promote_types(compute_dtype, jnp.float32)
