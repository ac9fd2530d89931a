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


def test_space_to_depth_places_each_patch_at_its_position_and_inverts():
    from vae_jax.networks.conv import depth_to_space, space_to_depth

    x = jnp.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    packed = space_to_depth(x, 2)
    assert packed.shape == (2, 2, 3, 12)
    for i, j, a, b in [(0, 0, 0, 0), (1, 2, 1, 0), (0, 1, 1, 1), (1, 0, 0, 1)]:
        # pixel (2i + a, 2j + b) is channels (2a + b) * 3 .. + 3 of position (i, j)
        start = (2 * a + b) * 3
        assert (packed[:, i, j, start : start + 3] == x[:, 2 * i + a, 2 * j + b]).all()
    assert (depth_to_space(packed, 2) == x).all()
    assert space_to_depth(x, 1) is x


def test_patched_conv_vae_works_at_half_resolution_with_full_resolution_output():
    model = vae_jax.conv_vae(
        (32, 32, 3), widths=(16, 32), blocks_per_stage=1, latent_channels=4, patch_size=2,
        likelihood=vae_jax.CoupledLogisticMixture(2),
    )  # fmt: skip
    assert model.latent_shape == (8, 8, 4)  # 32 / (2 * 2)
    params = vae_jax.init(model, jax.random.key(0))
    assert params["encoder"]["body"]["stem"]["kernel"].shape == (3, 3, 12, 16)  # 2x2 patches of RGB
    assert params["decoder"]["out"]["kernel"].shape == (3, 3, 16, 4 * 20)  # 4 pixels' parameters
    x = jax.random.randint(jax.random.key(1), (2, 32, 32, 3), 0, 256)
    mean, _ = vae_jax.encode(model, params, x)
    out = vae_jax.decode(model, params, mean)
    assert out.shape == (2, 32, 32, 20)
    assert jnp.isfinite(vae_jax.elbo(model, params, x, jax.random.key(2))).all()
    with pytest.raises(ValueError, match="patch_size"):
        vae_jax.conv_vae((30, 30, 3), widths=(8, 16), patch_size=2)  # 30 / 2 = 15 does not halve
    with pytest.raises(ValueError, match="patch_size"):
        vae_jax.conv_vae((32, 32, 3), widths=(8, 16), patch_size=0)


def test_patched_hierarchical_model_is_fully_convolutional():
    model = vae_jax.hierarchical_vae(
        (16, 16, 3), widths=(8, 8), blocks_per_stage=0, latent_channels=2, groups_per_stage=(1, 1), patch_size=2,
        likelihood=vae_jax.DiscretizedLogistic(),
    )  # fmt: skip
    assert model.group_shapes == ((4, 4, 2), (8, 8, 2))
    params = vae_jax.init(model, jax.random.key(0))
    z = tuple(jnp.zeros((1, 2 * h, 2 * w, c)) for h, w, c in model.group_shapes)  # a 32x32 image's latents
    assert model.decoder_output(params, z).shape == (1, 32, 32, 3, 2)
