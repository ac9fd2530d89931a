"""The sub-pixel transposed convolution: the function, the gradients and the initial parameters
of ``flax.linen.ConvTranspose`` ('SAME', stride s), for the codec's 5x5 of stride 2 and others."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from vae_jax.networks.subpixel import SubpixelConvTranspose, phase_offsets


@pytest.mark.parametrize("kernel_size, stride", [(5, 2), (3, 2), (4, 2), (5, 3), (2, 2), (1, 2)])
def test_it_computes_flax_conv_transpose_and_its_gradients(kernel_size, stride):
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    reference = nn.ConvTranspose(4, (kernel_size, kernel_size), strides=(stride, stride))
    params = reference.init(jax.random.key(1), x)
    params = jax.tree.map(
        lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params
    )  # a nonzero bias
    subpixel = SubpixelConvTranspose(4, kernel_size, stride)

    expected, got = reference.apply(params, x), subpixel.apply(params, x)
    assert got.shape == expected.shape == (2, 5 * stride, 6 * stride, 4)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=2e-5)

    def loss(layer):
        return lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))

    for argnum in (0, 1):
        np.testing.assert_allclose(
            ravel_pytree(jax.grad(loss(subpixel), argnum)(params, x))[0],
            ravel_pytree(jax.grad(loss(reference), argnum)(params, x))[0],
            atol=1e-4,
            rtol=1e-4,
        )


def test_it_starts_from_the_parameters_flax_conv_transpose_starts_from():
    x = jnp.zeros((1, 4, 4, 3))
    flax_params = nn.ConvTranspose(8, (5, 5), strides=(2, 2)).init(jax.random.key(3), x)
    subpixel_params = SubpixelConvTranspose(8, 5, 2).init(jax.random.key(3), x)
    assert jax.tree.structure(flax_params) == jax.tree.structure(subpixel_params)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), flax_params, subpixel_params))


def test_phase_offsets():
    assert phase_offsets(5, 2) == range(-1, 2)  # out[2m + p] reads x[m - 1 .. m + 1]
    assert phase_offsets(1, 2) == range(1)
