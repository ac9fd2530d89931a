"""Boundary checks: bad input fails loudly, naming the argument, the expected and the received.

Where each check runs:

* shapes, dtypes, that data are arrays, the params tree (``check_params``, against
  ``jax.eval_shape(model.init)``): in Python, so eagerly and at trace time under ``jit`` and
  ``vmap`` alike; a compiled call pays nothing for them.
* data values (``checked_data``), concrete: NumPy on the host, before any work.
* data values, traced (``jit``, ``vmap``, ``jit(vmap)``, ``grad``, ``scan``): one fused reduction
  on the device, then a ``lax.cond`` that calls back to the host, only for bad values, to raise.
  Under ``vmap`` the batch is reduced first, so one callback reports it. From a compiled
  program the error is a ``jax.errors.JaxRuntimeError`` (or a ``ValueError``) whose message ends
  with the eager call's text, and JAX logs the callback's traceback; under ``pmap`` it surfaces
  when the result is waited on.

Valid data give the same numbers, bit for bit, with the check or without. Its cost is the
reduction and the cond: on CPU about 40 us a call for a tiny model, under 3% for the 784-400-20
MLP's jitted ELBO; on accelerators the cond's predicate goes to the host every call. So code
whose data are valid by construction traces with ``value_checks("eager")``: the training losses
and evaluation of ``vae_jax.training`` (their data come from ``images.prepare``) do.

The switch, ``set_value_checks(mode)`` or the context manager ``value_checks(mode)`` (at import
the environment variable ``VAE_JAX_VALUE_CHECKS``, default ``"always"``):

``"always"``  concrete values on the host, traced values with the device-side check.
``"eager"``   concrete values only: traced values go unchecked (nothing added to the program).
``"off"``     no value checks (shapes, dtypes and params are still checked).

The mode is part of ``jax.jit``'s cache key (``jax.make_user_context``): a function traced under
one mode is traced again under another.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_RANGES = {
    "binary": "values in {0, 1}",
    "unit": "values in [0, 1]",
    "real": "real values",
    "discrete": "integer values in 0..255",
}

VALUE_CHECK_MODES = ("off", "eager", "always")


def _valid_mode(mode, name="mode"):
    if mode not in VALUE_CHECK_MODES:
        raise ValueError(f"{name}: expected one of {VALUE_CHECK_MODES}, got {mode!r}")
    return mode


# A jit-cache-sensitive context: changing the mode retraces what was traced under another.
_value_checks = jax.make_user_context(_valid_mode(os.environ.get("VAE_JAX_VALUE_CHECKS", "always"), "VAE_JAX_VALUE_CHECKS"))


def set_value_checks(mode: str) -> str:
    """Set where data values are checked (``"off"``, ``"eager"``, ``"always"``: see the module
    docstring); return the previous mode."""
    previous = value_checks_mode()
    _value_checks.set_global(_valid_mode(mode))
    return previous


def value_checks_mode() -> str:
    """The mode in force here (the innermost ``value_checks`` block's, else the global one)."""
    return _value_checks.value


def value_checks(mode: str):
    """A context manager: ``mode`` for the block (while tracing, for what it traces)."""
    return _value_checks(_valid_mode(mode))


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _check_array(name, x):
    """An array (JAX, NumPy or a tracer): anything else is named by its type, never printed whole."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return
    converts = ""
    if isinstance(x, (list, tuple)):
        try:
            converts = f" (as an array: shape {np.shape(x)})"
        except ValueError:  # ragged
            pass
    raise ValueError(f"{name}: expected an array (jax.Array or numpy.ndarray), got {type(x).__name__}{converts}")


def batch_rank(name, x, event_shape):
    """Return True for a batch ``(B, *event_shape)``, False for one example ``event_shape``."""
    _check_array(name, x)
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
    """Check images against the likelihood's input kind; return whether ``x`` is a batch.

    Validation only: a traced ``x``'s values are checked where the array ``checked_data`` returns
    is used (the public functions use it)."""
    return checked_data(name, x, input_kind, data_shape)[1]


def checked_data(name, x, input_kind, data_shape):
    """``(x, batched)``: ``x`` checked against the likelihood's input kind, and whether it is a batch.

    Values are checked as ``value_checks_mode()`` says: a concrete ``x`` on the host, a traced
    one (``"always"``) on the device, its host callback tied to the returned array, which equals
    ``x`` (compute with it, or XLA drops the check as dead code)."""
    batched = batch_rank(name, x, data_shape)
    dtype = jnp.result_type(x)
    if input_kind == "discrete":
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
            raise ValueError(f"{name}: expected an integer or float array of 8-bit values, got dtype {dtype}")
    elif not jnp.issubdtype(dtype, jnp.floating):
        hint = (
            " (8-bit images: convert with vae_jax.data.prepare)"
            if jnp.issubdtype(dtype, jnp.integer)
            else ""
        )
        raise ValueError(
            f"{name}: expected a float array with {_RANGES[input_kind]}, got dtype {dtype}{hint}"
        )
    if math.prod(np.shape(x)) == 0:
        raise ValueError(f"{name}: got an empty array of shape {np.shape(x)}")
    mode = value_checks_mode()
    if mode == "off":
        return x, batched
    if _is_concrete(x):
        _raise_unless_valid(name, input_kind, *_value_stats(np, np.asarray(x), input_kind))
    elif mode == "always":
        stats = jax.lax.stop_gradient(_value_stats(jnp, x, input_kind))  # the check has no derivative
        checked = _checked_on_host(name, input_kind)(*stats)
        x = jnp.where(checked, x, jnp.zeros_like(x))  # x itself; false only after the host raised
    return x, batched


def _value_stats(xp, x, input_kind):
    """``(valid, finite, low, high)`` of ``x``, with ``xp`` NumPy (on the host) or jax.numpy
    (on the device, where XLA fuses them into one pass)."""
    finite = xp.all(xp.isfinite(x))
    low, high = xp.min(x).astype(np.float32), xp.max(x).astype(np.float32)
    if input_kind == "binary":
        valid = xp.all((x == 0) | (x == 1))
    elif input_kind == "unit":
        valid = (low >= 0) & (high <= 1)
    elif input_kind == "discrete":
        valid = (low >= 0) & (high <= 255) & xp.all(x == xp.round(x))
    else:
        valid = xp.bool_(True)
    return valid & finite, finite, low, high


def _raise_unless_valid(name, input_kind, valid, finite, low, high):
    """The error for ``_value_stats``' results; under ``vmap`` they hold one entry per example."""
    if np.all(valid):
        return np.bool_(True)
    if not np.all(finite):
        raise ValueError(f"{name}: expected finite {_RANGES[input_kind]}, got non-finite values")
    raise ValueError(
        f"{name}: expected {_RANGES[input_kind]}, got values in [{float(np.min(low)):g}, {float(np.max(high)):g}]"
    )


@functools.lru_cache(maxsize=None)
def _checked_on_host(name, input_kind):
    """``(valid, finite, low, high) -> True``, raising in a host callback when the stats show bad
    values. The callback sits in the false branch of a ``lax.cond``, so valid data cost the
    device-side reduction alone; it is a ``pure_callback`` (no effect, which would slow every
    dispatch), kept alive by the data depending on its result.

    Under ``vmap`` the rule reduces the batch's stats to one set first: the cond stays a branch
    (a batched predicate would turn it into a select that always calls back), and one callback
    reports the whole batch."""
    raise_on_host = functools.partial(_raise_unless_valid, name, input_kind)
    true = jax.ShapeDtypeStruct((), jnp.bool_)

    @jax.custom_batching.custom_vmap
    def check(valid, finite, low, high):
        stats = (valid, finite, low, high)
        call_back = lambda: jax.pure_callback(raise_on_host, true, *stats, vmap_method="sequential")
        return jax.lax.cond(valid, lambda: jnp.bool_(True), call_back)

    @check.def_vmap
    def check_batched(axis_size, in_batched, valid, finite, low, high):
        del axis_size, in_batched  # unbatched stats reduce to themselves
        return check(jnp.all(valid), jnp.all(finite), jnp.min(low), jnp.max(high)), False

    return check


def check_params(model, params):
    """Raise unless ``params`` has the tree and shapes ``model.init`` gives, naming what is missing,
    extra or mis-shaped (path, expected shape, got shape). The reference is
    ``jax.eval_shape(model.init, key)``, made once per model (no FLOPs); the comparison runs in
    Python, so under ``jit`` it costs trace time only."""
    want = _param_template(model)
    leaves, structure = jax.tree_util.tree_flatten(params)
    if structure == want.structure and [np.shape(leaf) for leaf in leaves] == want.shapes:
        return
    problems = _tree_differences(want.by_path, _shapes_by_path(params))
    if not problems:  # the same entries in other containers (a FrozenDict, say)
        return
    shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
    got = "" if isinstance(params, dict) else f" (got a {type(params).__name__})"
    raise ValueError(f"params: expected the tree vae_jax.init(model, key) gives for this model{got}: {shown}")


class _ParamTemplate(NamedTuple):
    structure: Any  # the treedef
    shapes: list  # the leaves' shapes, in order
    by_path: dict  # _shapes_by_path


def _param_template(model) -> _ParamTemplate:
    """What ``model.init``'s params look like, cached per (hashable) model."""
    try:
        hash(model)
    except TypeError:  # an unhashable model: no cache
        return _cached_param_template.__wrapped__(model)
    return _cached_param_template(model)


@functools.lru_cache(maxsize=64)
def _cached_param_template(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    leaves, structure = jax.tree_util.tree_flatten(shapes)
    return _ParamTemplate(structure, [leaf.shape for leaf in leaves], _shapes_by_path(shapes))


def _is_empty_container(node):
    return isinstance(node, (dict, list, tuple)) and not node and not hasattr(node, "_fields")


def _shapes_by_path(tree):
    """``{path: shape}`` over the leaves; an empty container (a prior's ``{}``) is an entry too,
    so a missing one is noticed. A path is a tuple of its keys' ``['name']`` forms."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_empty_container)
    return {
        tuple(jax.tree_util.keystr((entry,)) for entry in path): "empty" if _is_empty_container(leaf) else tuple(np.shape(leaf))
        for path, leaf in flat
    }


def _tree_differences(want, have):
    """What ``have`` lacks, adds or shapes differently from ``want`` (both ``_shapes_by_path``),
    a missing or extra sub-tree named once by its shortest path."""

    def outermost(paths, other):
        other_prefixes = {path[:i] for path in other for i in range(1, len(path) + 1)}
        named = []
        for path in paths:
            head = next((path[:i] for i in range(1, len(path) + 1) if path[:i] not in other_prefixes), path)
            if head not in named:
                named.append(head)
        return ["params" + "".join(head) for head in named]

    problems = [f"missing {path}" for path in outermost([p for p in want if p not in have], have)]
    problems += [f"not in the model: {path}" for path in outermost([p for p in have if p not in want], want)]
    describe = lambda shape: "an empty container" if shape == "empty" else f"shape {shape}"
    for path in want:
        if path in have and want[path] != have[path]:
            problems.append(f"params{''.join(path)}: expected {describe(want[path])}, got {describe(have[path])}")
    return problems


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


def check_sizes(name, values, minimum: int = 1, *, allow_empty=False) -> tuple[int, ...]:
    """A tuple (or list) of integers >= ``minimum``, non-empty unless ``allow_empty``."""
    sizes = tuple(values) if isinstance(values, (tuple, list)) else None
    if sizes is None or not (sizes or allow_empty) or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in sizes
    ):
        which = "a tuple" if allow_empty else "a non-empty tuple"
        raise ValueError(f"{name}: expected {which} of integers >= {minimum}, got {values!r}")
    return tuple(int(v) for v in sizes)


def check_data_shape(data_shape, layout: str | None = None) -> tuple[int, ...]:
    """One example's shape: a non-empty tuple of sizes >= 1; ``layout`` (e.g. ``"(height, width,
    channels)"``) fixes its rank."""
    shape = check_sizes("data_shape", data_shape)
    if layout is not None and len(shape) != layout.count(",") + 1:
        raise ValueError(f"data_shape: expected {layout}, got {data_shape!r}")
    return shape


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices`` (a collection of names)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}, got {value!r}")
    return value


def check_part(name, value, example: str, required: tuple[str, ...]):
    """A model part (a likelihood, a prior): an instance with the ``required`` attributes, not its
    class; a mixture's ``num_components`` at least 1."""
    if isinstance(value, type) or not all(hasattr(value, attribute) for attribute in required):
        got = f"the class {value.__name__}" if isinstance(value, type) else repr(value)
        raise ValueError(f"{name}: expected an instance such as {example}, got {got}")
    if hasattr(value, "num_components"):
        check_count(f"{name}.num_components", value.num_components)
    return value


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
