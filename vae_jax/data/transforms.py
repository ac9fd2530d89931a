"""uint8 pixels -> what a likelihood reads: pure JAX functions, usable inside ``jit``.

Each takes the uint8 batch (or single image; shapes pass through) first and, when it draws, a
``key`` after it, which it uses exactly once.

===================  ========================  =====================================
``prepare`` name     function                  values
===================  ========================  =====================================
``discrete``         ``to_discrete``           int32 0..255
``unit``             ``to_unit_interval``      float32 x / 255 in [0, 1]
``dequantized``      ``dequantize``            float32 (x + u) / 256 in [0, 1)
``static_binary``    ``static_binarize``       float32 {0, 1}: x >= threshold
``dynamic_binary``   ``dynamic_binarize``      float32 {0, 1} ~ Bernoulli(x / 255)
===================  ========================  =====================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Dequantization noise has 16 fractional bits: then x + u (8 integer bits + 16) is exact in
# float32's 24-bit significand, so floor(256 * y) == x holds bit for bit and y < 1 always; a
# float32 uniform u in [0, 1) could round 255 + u up to 256.
_NOISE_BITS = 16
# x / 255 for every byte, each the float32 nearest the true quotient: XLA compiles ``x / 255``
# into ``x * (1 / 255)``, which is off by an ulp for half the values.
_UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


def _check_uint8(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.dtype != jnp.uint8:
        raise ValueError(f"x: expected uint8 pixels 0..255, got dtype {x.dtype}")
    return x


def to_discrete(x) -> jax.Array:
    """The 8-bit integers as int32 0..255, for discrete likelihoods."""
    return _check_uint8(x).astype(jnp.int32)


def to_unit_interval(x) -> jax.Array:
    """``x / 255`` as float32 in [0, 1], correctly rounded."""
    return jnp.asarray(_UNIT_LEVELS)[_check_uint8(x)]


def dequantize(x, key) -> jax.Array:
    """Uniform dequantization ``(x + u) / 256``, ``u ~ U[0, 1)``: float32 in [0, 1).

    A continuous density on these values lower-bounds the discrete likelihood of ``x``
    (Theis et al. 2016); add ``D * ln 256`` to ``-log p`` when converting to bits/dim.
    ``u`` lies on a grid of ``2**-16`` (see ``_NOISE_BITS``), a negligible coarsening.
    """
    x = _check_uint8(x)
    noise = jax.random.bits(key, x.shape, jnp.uint16).astype(jnp.float32) * 2.0**-_NOISE_BITS
    return (x.astype(jnp.float32) + noise) / 256.0


def static_binarize(x, threshold: int = 128) -> jax.Array:
    """float32 ``1.0`` where ``x >= threshold``, else ``0.0`` (the same bits every epoch)."""
    return (_check_uint8(x) >= threshold).astype(jnp.float32)


def dynamic_binarize(x, key) -> jax.Array:
    """float32 draws from ``Bernoulli(x / 255)``, fresh per key (Salakhutdinov & Murray 2008)."""
    return jax.random.bernoulli(key, to_unit_interval(x)).astype(jnp.float32)


_KEYLESS = {
    "discrete": to_discrete,
    "unit": to_unit_interval,
    "static_binary": static_binarize,
}
_KEYED = {
    "dequantized": dequantize,
    "dynamic_binary": dynamic_binarize,
}
LIKELIHOOD_INPUTS = tuple(sorted({**_KEYLESS, **_KEYED}))


def prepare(x, likelihood_input: str, key=None) -> jax.Array:
    """uint8 ``x`` transformed for a likelihood; ``likelihood_input`` is one of ``LIKELIHOOD_INPUTS``.

    ``key`` is needed (and used once) by ``dequantized`` and ``dynamic_binary``; the others ignore
    it. Under ``jit`` pass ``likelihood_input`` as a static argument.
    """
    if likelihood_input in _KEYLESS:
        return _KEYLESS[likelihood_input](x)
    if likelihood_input in _KEYED:
        if key is None:
            raise ValueError(
                f"key: likelihood_input={likelihood_input!r} draws random numbers and needs a key"
            )
        return _KEYED[likelihood_input](x, key)
    raise ValueError(f"likelihood_input: expected one of {LIKELIHOOD_INPUTS}, got {likelihood_input!r}")
