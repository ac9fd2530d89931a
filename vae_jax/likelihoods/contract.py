"""The likelihood contract: what every observation model p(x | z) declares and gives, and the registry
of them by name.

A likelihood turns a decoder's output ``out`` into a distribution over one example ``x`` of
``data_shape``, channels last: ``(H, W, C)`` images (the axes before the last index pixels, the last
one a pixel's channels; flat data ``(D,)`` is one pixel of D channels). Every likelihood scores one
pixel as one event, given z and its declared context (``Context``):

    p(x | z) = prod_ij p(x_ij | z, context of (i, j)),    log_prob(x, out)[..., i, j] = log p(x_ij | ...).

Those that factorize over sub-pixels also give the split, ``subpixel_log_prob`` (..., H, W, C);
those that code 8-bit pixels losslessly (``input_kind == "discrete"``) give what a coder needs
(``DiscreteLikelihood``). Each is a frozen, hashable dataclass, so a model holding one can be a
static argument of ``jax.jit``, and is registered under a name (``register``), which is what a
configuration's ``likelihood`` field names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.likelihoods.context import Context

# What the data must look like (``images.prepare`` makes it from 8-bit pixels): {0, 1}; [0, 1]
# (for 8-bit images, uniformly dequantized: see the bits/dim note in ``evaluation``); any finite
# reals; integers 0..255.
INPUT_KINDS = ("binary", "unit", "real", "discrete")


@runtime_checkable
class Likelihood(Protocol):
    """p(x | z) from a decoder's output: what every function of a model reads of its likelihood.

    ``x`` is a batch ``(..., *data_shape)`` in the ``input_kind``; ``out`` the decoder's output for
    it, ``(..., *params_shape(data_shape))``.
    """

    input_kind: str  # one of INPUT_KINDS
    context: Context  # what a pixel's distribution reads besides z

    def params_shape(self, data_shape) -> tuple[int, ...]:
        """The decoder's output per example; a ValueError naming ``data_shape`` if it cannot model it."""

    def event_shape(self, data_shape) -> tuple[int, ...]:
        """The shape of one event ``log_prob`` scores: one pixel's channels, ``data_shape[-1:]``."""

    def log_prob(self, x, out) -> jax.Array:
        """log p(x_ij | z, context) for every pixel: (..., H, W, C) -> (..., H, W)."""

    def log_prob_sum(self, x, out, event_ndim: int) -> jax.Array:
        """log p(x | z): ``log_prob`` summed over the pixels of the last ``event_ndim`` axes of x."""

    def known_log_prob(self, x, out, known) -> jax.Array:
        """What partly known data can be scored with: per pixel (..., H, W), the log-probability of
        the known sub-pixels (``known`` (..., H, W, C) bool) that read nothing unknown, 0 elsewhere."""

    def mean(self, out) -> jax.Array:
        """A displayable mean in [0, 1], (..., *data_shape)."""

    def sample(self, out, key) -> jax.Array:
        """x ~ p(x | z), in the ``input_kind``'s domain, (..., *data_shape)."""

    def for_data_shape(self, data_shape) -> Likelihood:
        """The likelihood this one is on data of ``data_shape`` (itself, or the one it reduces to
        there: the channel-coupled mixtures on other than three channels are the independent one)."""


@runtime_checkable
class DiscreteLikelihood(Likelihood, Protocol):
    """A likelihood of 8-bit pixels (``input_kind == "discrete"``): what a lossless coder needs.

    A coder codes a tile's sub-pixels one step of ``coding_order`` at a time with the tables of
    ``coding_tables``; the decoder, which has decoded the steps before, rebuilds the same tables.
    """

    def channel_log_probs(self, x, out) -> jax.Array:
        """log P(x_ijc = v | z, context) for every sub-pixel and value v = 0..255: (..., H, W, C, 256).
        Sub-pixel c reads only its context in x; every other value may be anything."""

    def coding_order(self, valid_hw, channels: int, chunk: int, tiles: int = 1) -> list[tuple[np.ndarray, int]]:
        """Steps (raster pixel indices, channel) covering the sub-pixels of ``tiles`` (h, w) tiles
        stacked one under the other once, each reading only what earlier steps hold
        (``Context.coding_order``)."""

    def coding_output(self, out) -> jax.Array:
        """The decoder output as ``coding_tables`` and ``coding_rows`` read it: ``out`` with what the
        tables would otherwise squash in NumPy (the coupled mixtures' tanh of their coefficients)
        squashed here, in JAX, inside the coder's compiled network program, where it is fused and
        vectorized; ``out`` itself for most likelihoods."""

    def coding_tables(self, out, tile_height=None) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
        """From the coding output (``coding_output``, h, w, ...) of a tile, or of tiles of
        ``tile_height`` rows stacked one under the other (float64, snapped by the coder), the
        function ``tables(indices, x_all, channel)``: (n, 256) float64 probabilities,
        unnormalized, of sub-pixel ``channel`` of the raster pixels ``indices``, x_all (h w, C)
        holding every value they read. Each tile is an image of its own: no context reaches
        across to the tile above. NumPy float64, each pixel's alone: a decoder rebuilds them bit
        for bit."""

    def coding_rows(self, out, tile_height=None) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        """For a mixture whose channels share each pixel's component (the coupled ones), the
        function ``rows(indices, x_all)``: the pixels' coupled-mixture rows (n, 10K) given what
        they read, so that a coder can take bits back over the component and code one
        component's table a channel; None for every other likelihood."""


def _members(protocol) -> set[str]:
    """The attributes and methods ``protocol`` itself declares (not those it inherits)."""
    methods = {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}
    return methods | set(inspect.get_annotations(protocol))


REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: the likelihood class under ``name`` in ``REGISTRY`` (what a configuration's
    ``likelihood`` names), after checking that it has the contract's members (a discrete one the
    coder's too). Sets ``cls.name``."""

    def add(cls):
        if not (isinstance(name, str) and name):
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"name: {name!r} is already the likelihood {REGISTRY[name].__name__}")
        required = _members(Likelihood)
        kind = getattr(cls, "input_kind", None)
        if isinstance(kind, str):  # a property (a kind set per instance) is checked where it is used
            if kind not in INPUT_KINDS:
                raise ValueError(f"{cls.__name__}.input_kind: expected one of {INPUT_KINDS}, got {kind!r}")
            if kind == "discrete":
                required |= _members(DiscreteLikelihood)
        missing = sorted(member for member in required if not hasattr(cls, member))
        if missing:
            raise TypeError(f"{cls.__name__}: a likelihood needs {', '.join(missing)} (vae_jax.likelihoods.Likelihood)")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def registered_name(likelihood) -> str | None:
    """The name ``likelihood``'s own class is registered under (None for an unregistered class,
    a subclass of a registered one included)."""
    name = getattr(type(likelihood), "name", None)
    return name if REGISTRY.get(name) is type(likelihood) else None


def from_name(name: str, **options) -> Likelihood:
    """The likelihood registered as ``name``, built with those ``options`` its constructor takes
    (``num_components=5, obs_var=None``: each class takes what it has)."""
    if name not in REGISTRY:
        raise ValueError(f"likelihood: expected one of {', '.join(REGISTRY)}, got {name!r}")
    cls = REGISTRY[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{option: value for option, value in options.items() if option in accepted})


class LikelihoodBase:
    """The contract's members that follow from a likelihood's context, for its classes to share."""

    context = Context()

    def event_shape(self, data_shape):
        return tuple(data_shape[-1:])

    def for_data_shape(self, data_shape):
        return self

    def known_log_prob(self, x, out, known):
        """``log_prob`` of the pixels ``context.scorable_pixels(known)`` marks, 0 elsewhere."""
        return jnp.where(self.context.scorable_pixels(known), self.log_prob(x, out), 0.0)

    def coding_order(self, valid_hw, channels, chunk, tiles=1):
        return self.context.coding_order(valid_hw, channels, chunk, tiles)

    def coding_output(self, out):
        return out

    def coding_rows(self, out, tile_height=None):
        """None: no component shared by a pixel's channels for a coder to take bits back over (the
        coupled mixtures say otherwise); such a likelihood is coded with ``coding_tables``."""
        return None  # noqa: RET501 (the contract: None, not nothing)
