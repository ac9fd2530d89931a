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


# Log-variances leave every encoder through b * tanh(v / b): the identity near 0 (nothing changes
# at initialisation), and a bound on exp(+-log_var) that keeps one bad update from producing an
# infinite KL (NVAE's soft clamp, Vahdat & Kautz 2020, sec. 3.2). Posterior standard deviations
# stay within [e^-5, e^5].
LOG_VAR_BOUND = 10.0


def soft_clamp(values, bound=LOG_VAR_BOUND):
    """bound * tanh(values / bound): ~identity for |values| << bound, never beyond +-bound."""
    return bound * jnp.tanh(values / bound)


def soft_clamp_inverse(values, bound=LOG_VAR_BOUND):
    """The pre-clamp value that ``soft_clamp`` maps to ``values`` (|values| < bound)."""
    return bound * jnp.arctanh(values / bound)
