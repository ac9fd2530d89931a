"""Boundary checks: bad input fails loudly, naming the argument, the expected and the received.

Shapes and dtypes are checked always (they are static under ``jit``); values are checked
only when they are concrete, since a traced array has none to look at.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_RANGES = {
    "binary": "values in {0, 1}",
    "unit": "values in [0, 1]",
    "real": "real values",
    "discrete": "integer values in 0..255",
}


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def batch_rank(name, x, event_shape):
    """Return True for a batch ``(B, *event_shape)``, False for one example ``event_shape``."""
    shape = tuple(np.shape(x))
    event_shape = tuple(event_shape)
    n = len(event_shape)
    if len(shape) == n and shape == event_shape:
        return False
    if len(shape) == n + 1 and shape[1:] == event_shape:
        if shape[0] == 0:  # static, so this fails the same way under jit
            raise ValueError(f"{name}: got an empty batch of shape {shape}; expected at least one example")
        return True
    raise ValueError(
        f"{name}: expected shape {event_shape} (one example) or (batch, *{event_shape}), got {shape}"
    )


def check_data(name, x, input_kind, data_shape):
    """Check images against the likelihood's input kind; return whether ``x`` is a batch."""
    batched = batch_rank(name, x, data_shape)
    dtype = jnp.result_type(x)
    if input_kind == "discrete":
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
            raise ValueError(f"{name}: expected an integer or float array of 8-bit values, got dtype {dtype}")
    elif not jnp.issubdtype(dtype, jnp.floating):
        hint = (
            " (8-bit images: convert with vae_jax.data.transforms.prepare)"
            if jnp.issubdtype(dtype, jnp.integer)
            else ""
        )
        raise ValueError(
            f"{name}: expected a float array with {_RANGES[input_kind]}, got dtype {dtype}{hint}"
        )
    if _is_concrete(x):
        _check_values(name, np.asarray(x), input_kind)
    return batched


def _check_values(name, x, input_kind):
    if x.size == 0:
        raise ValueError(f"{name}: got an empty array of shape {x.shape}")
    low, high = float(x.min()), float(x.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError(f"{name}: expected finite {_RANGES[input_kind]}, got non-finite values")
    bad = False
    if input_kind == "binary":
        bad = not np.all((x == 0) | (x == 1))
    elif input_kind == "unit":
        bad = low < 0.0 or high > 1.0
    elif input_kind == "real":
        bad = False
    elif input_kind == "discrete":
        bad = low < 0 or high > 255 or not np.all(x == np.round(x))
    if bad:
        raise ValueError(f"{name}: expected {_RANGES[input_kind]}, got values in [{low:g}, {high:g}]")


def check_key(name, key):
    """A PRNG key: a typed key array, or the raw uint32 form of shape (2,)."""
    expected = "a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed))"
    if not hasattr(key, "shape") or not hasattr(key, "dtype"):
        raise ValueError(f"{name}: expected {expected}, got {type(key).__name__} {key!r}")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name}: expected a single PRNG key, got a key array of shape {key.shape}")
        return
    shape, dtype = tuple(key.shape), key.dtype
    if shape != (2,) or dtype != jnp.uint32:
        raise ValueError(f"{name}: expected {expected}, got shape {shape} dtype {dtype}")


def check_finite_non_negative(name, value):
    """A finite float >= 0 (a concrete Python or NumPy number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")


def check_finite_positive(name, value):
    """A finite float > 0 (a concrete Python or NumPy number): a scale, a temperature."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (number and np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")


def check_count(name, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``; a clear ``ValueError`` if not."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_scales(scales) -> tuple[int, ...]:
    """Downscaling factors: a non-empty tuple of distinct integers >= 1."""
    scales = tuple(scales) if isinstance(scales, (tuple, list)) else scales
    if not (isinstance(scales, tuple) and scales and len(set(scales)) == len(scales)):
        raise ValueError(f"scales: expected a non-empty tuple of distinct downscaling factors, got {scales!r}")
    return tuple(check_count("scales", factor, 1) for factor in scales)


def check_zooms(zooms) -> tuple[int, ...]:
    """Enlarging factors: a tuple (possibly empty) of distinct integers >= 2."""
    zooms = tuple(zooms) if isinstance(zooms, (tuple, list)) else zooms
    if not (isinstance(zooms, tuple) and len(set(zooms)) == len(zooms)):
        raise ValueError(f"zooms: expected a tuple of distinct enlarging factors, got {zooms!r}")
    return tuple(check_count("zooms", factor, 2) for factor in zooms)


def check_latent(name, z, template) -> bool:
    """Check a latent against the model's ``latent_template`` (one ``ShapeDtypeStruct`` per group);
    return whether ``z`` is a batch. Every group must be batched alike."""
    leaves, structure = jax.tree_util.tree_flatten(z)
    shapes, want_structure = jax.tree_util.tree_flatten(template)
    if structure != want_structure:
        raise ValueError(f"{name}: expected a latent structured like {template}, got {structure}")
    batched = {batch_rank(f"{name}[{i}]" if len(leaves) > 1 else name, leaf, t.shape)
               for i, (leaf, t) in enumerate(zip(leaves, shapes))}  # fmt: skip
    if len(batched) > 1:
        raise ValueError(f"{name}: some groups are batched and some are not")
    sizes = {np.shape(leaf)[0] for leaf in leaves} if batched == {True} else set()
    if len(sizes) > 1:
        raise ValueError(f"{name}: the groups have different batch sizes {sorted(sizes)}")
    return batched.pop()
