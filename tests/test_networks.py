"""Network shapes and the classic presets' exact sizes."""

import math

import jax
import jax.numpy as jnp
import pytest

import vae_jax


def _count(tree):
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("preset,hidden", [(vae_jax.mlp_784_400_20, 400), (vae_jax.mlp_784_500_20, 500)])
def test_classic_mlp_presets_have_the_papers_sizes(preset, hidden):
    model = preset()
    params = vae_jax.init(model, jax.random.key(0))
    assert _count(params["encoder"]) == 784 * hidden + hidden + 2 * (hidden * 20 + 20)
    assert _count(params["decoder"]) == 20 * hidden + hidden + hidden * 784 + 784
    assert model.latent_shape == (20,)


def test_conv_vae_latent_and_output_shapes():
    model = vae_jax.conv_vae(
        (32, 32, 3), widths=(16, 32, 64), blocks_per_stage=1, latent_channels=8,
        likelihood=vae_jax.DiscretizedLogisticMixture(4),
    )
    params = vae_jax.init(model, jax.random.key(0))
    x = jnp.zeros((2, 32, 32, 3), jnp.int32)
    mean, log_var = vae_jax.encode(model, params, x)
    assert mean.shape == log_var.shape == (2, 8, 8, 8) == (2, *model.latent_shape)
    assert vae_jax.decode(model, params, mean).shape == (2, 32, 32, 3, 12)
    big = vae_jax.conv_vae((64, 64, 3), widths=(8, 16, 32, 32), blocks_per_stage=1, latent_channels=4)
    assert big.latent_shape == (8, 8, 4)


def test_models_are_hashable_static_arguments():
    a, b = vae_jax.conv_vae(), vae_jax.conv_vae()
    assert a == b and hash(a) == hash(b)
    assert a != vae_jax.conv_vae(latent_channels=8)
    f = jax.jit(lambda model, x: x * len(model.latent_shape), static_argnums=0)
    assert float(f(a, 1.0)) == 3.0
