"""Tiling is exact; restoration keeps known pixels, returns [0, 1] images of the right shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAMILIES, perturbed

import vae_jax
from vae_jax import images
from vae_jax.apps import restoration, tiling


def _photo(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- tiling


_SIZES = [(1, 1), (3, 5), (8, 8), (7, 9), (16, 8), (17, 31), (40, 24)]


# Reflect padding needs the image larger than the padding, so it skips the smallest sizes.
@pytest.mark.parametrize(
    ("size", "mode"), [(s, "edge") for s in _SIZES] + [(s, "reflect") for s in _SIZES if min(s) >= 4]
)
def test_split_stitch_exact(size, mode):
    image = _photo(*size)
    tiles, grid = tiling.split(image, (4, 8), mode)
    assert tiles.shape == (grid.rows * grid.cols, 4, 8, 3)
    np.testing.assert_array_equal(tiling.stitch(tiles, grid), image)
    np.testing.assert_array_equal(
        np.asarray(tiling.stitch(*tiling.split(jnp.asarray(image), (4, 8), mode))), image
    )


def test_random_sizes_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        height, width, th, tw = rng.integers(1, 30, 4)
        image = rng.random((height, width, 2))
        tiles, grid = tiling.split(image, (th, tw))
        np.testing.assert_array_equal(tiling.stitch(tiles, grid), image)


def test_tiles_in_raster_order_with_edge_padding():
    image = _photo(5, 7)
    tiles, grid = tiling.split(image, (4, 4))
    assert (grid.rows, grid.cols) == (2, 2)
    np.testing.assert_array_equal(tiles[0], image[:4, :4])
    np.testing.assert_array_equal(tiles[1][:, :3], image[:4, 4:7])
    np.testing.assert_array_equal(tiles[1][:, 3], image[:4, 6])  # edge repeated
    np.testing.assert_array_equal(tiles[2][0], image[4, :4])


def test_stitch_checks_shape():
    tiles, grid = tiling.split(_photo(5, 7), (4, 4))
    with pytest.raises(ValueError, match="tiles"):
        tiling.stitch(tiles[:3], grid)


# ---------------------------------------------------------------- inpainting


@pytest.mark.parametrize("method", restoration.INPAINTERS)
@pytest.mark.parametrize("fixture", ["discrete_mlp", "gaussian_mlp_2d", "local_conv"])
def test_inpainting_keeps_known_pixels_exactly(method, fixture, request):
    model, params = request.getfixturevalue(fixture)
    channels = model.data_shape[-1]
    image_uint8 = np.random.default_rng(3).integers(0, 256, (11, 13, channels), dtype=np.uint8)
    image = jnp.asarray(images.to_unit(image_uint8))
    mask = restoration.random_pixel_mask((11, 13), jax.random.key(4), 0.6)
    out = restoration.inpaint(
        model, params, image, mask, jax.random.key(5), method=method, iterations=5, steps=10
    )
    assert out.shape == image.shape and out.dtype == jnp.float32
    assert bool(jnp.all((out >= 0) & (out <= 1)))
    mask3 = np.broadcast_to(np.asarray(mask)[..., None], image.shape)
    np.testing.assert_array_equal(np.asarray(out)[mask3], np.asarray(image)[mask3])
    # ... and through uint8 as well.
    np.testing.assert_array_equal(images.to_uint8(out)[mask3], image_uint8[mask3])
    assert not np.array_equal(np.asarray(out)[~mask3], np.zeros((~mask3).sum()))


def test_tile_level_inpainting_keeps_known_pixels(discrete_mlp):
    model, params = discrete_mlp
    tiles = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3))
    mask = jax.random.bernoulli(jax.random.key(1), 0.5, (3, 8, 8, 1))
    for out in (
        restoration.inpaint_resample_tiles(model, params, tiles, mask, jax.random.key(2), iterations=3),
        restoration.inpaint_optimise_tiles(model, params, tiles, mask, steps=5),
    ):
        keep = np.broadcast_to(np.asarray(mask), tiles.shape)
        np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(tiles)[keep])


def test_resample_is_deterministic_in_key(discrete_mlp):
    model, params = discrete_mlp
    image = jnp.asarray(images.to_unit(_photo(8, 16)))
    mask = restoration.centre_square_mask((8, 16))
    run = lambda k: restoration.inpaint(model, params, image, mask, jax.random.key(k), iterations=3)
    np.testing.assert_array_equal(run(1), run(1))


def test_mean_fill_and_masks():
    image = jnp.asarray(images.to_unit(_photo(6, 6)))
    mask = restoration.centre_square_mask((6, 6), 0.5)
    assert int((~mask).sum()) == 9
    filled = restoration.mean_fill(image, mask)
    np.testing.assert_array_equal(filled[mask], image[mask])
    np.testing.assert_allclose(filled[2, 2], image[mask].mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="boolean"):
        restoration.mean_fill(image, mask.astype(jnp.float32))


# ---------------------------------------------------------------- denoising


@pytest.mark.parametrize("method", restoration.DENOISERS)
@pytest.mark.parametrize("fixture", ["discrete_mlp", "local_conv"])
def test_denoise_shape_and_range(fixture, method, request):
    model, params = request.getfixturevalue(fixture)
    clean = jnp.asarray(images.to_unit(_photo(10, 19)))
    noisy = restoration.add_gaussian_noise(clean, 0.2, jax.random.key(0))
    assert float(noisy.min()) < 0 or float(noisy.max()) > 1  # the noise is not clipped
    out = restoration.denoise(model, params, noisy, 0.2, method=method, steps=10)
    assert out.shape == clean.shape and bool(jnp.all((out >= 0) & (out <= 1)))


def test_known_pixels_of_a_local_likelihood_never_read_an_unknown_value(local_conv):
    """Inpainting scores p(x_ij | neighbours) only where the neighbours are known: the values under
    the hole may be anything without moving the objective; a known pixel's value moves it."""
    model, params = local_conv
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.integers(0, 256, (2, 8, 8, 3)), jnp.float32)
    mask = jnp.asarray(rng.random((2, 8, 8, 1)) < 0.7).repeat(3, axis=-1)
    mean, _ = model.posterior(params, target.astype(jnp.int32))
    out = model.decoder_output(params, mean)
    score = lambda t: float(restoration._log_likelihood(model, "known_pixels", out, t, mask, 0.0))
    scrambled = jnp.where(mask, target, (target * 7 + 13) % 256)
    assert score(scrambled) == score(target)
    known = tuple(int(v) for v in np.argwhere(np.asarray(mask[..., 0]))[0])
    assert score(target.at[known].add(50) % 256) != score(target)


def test_map_search_lowers_its_objective(gaussian_mlp_2d):
    model, params = gaussian_mlp_2d
    y = jax.random.uniform(jax.random.key(0), (4, 4, 4, 1))
    z0 = jax.random.normal(jax.random.key(1), (4, 2))
    _, losses = restoration._maximise_in_latent_space(
        model, params, z0, y, jnp.ones(y.shape, bool), 2 * np.log(0.1),
        objective="gaussian_noise", steps=50, learning_rate=0.05,
    )  # fmt: skip
    assert float(losses[-1]) < float(losses[0])


def test_baselines():
    constant = jnp.full((9, 9, 3), 0.25)
    np.testing.assert_allclose(restoration.gaussian_blur(constant, 1.0), constant, rtol=1e-6)
    assert float(restoration.psnr(constant + 0.1, constant)) == pytest.approx(20.0, rel=1e-4)
    assert float(restoration.ssim(constant, constant)) == pytest.approx(1.0)


def test_report_and_files(discrete_mlp, tmp_path):
    model, params = discrete_mlp
    report = restoration.run_restoration(
        model, params, _photo(12, 16), jax.random.key(0), out_dir=tmp_path, iterations=3, steps=5
    )
    for task, methods in (
        ("denoise", ("noisy", "gaussian_blur", "posterior_mean", "map")),
        ("inpaint_centre", ("masked", "mean_fill", "resample", "optimise")),
        ("inpaint_random", ("masked", "mean_fill", "resample", "optimise")),
    ):
        for method in methods:
            assert np.isfinite(report[task][method]["psnr"]) and -1 <= report[task][method]["ssim"] <= 1
    assert len(report["files"]) == 3 and all(
        (tmp_path / f"{t}.png").exists() for t in ("denoise", "inpaint_centre")
    )


def test_wrong_image_shape_is_refused(discrete_mlp):
    model, params = discrete_mlp
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        restoration.denoise(model, params, jnp.zeros((8, 8, 1)), 0.1)


def test_latent_map_of_a_hierarchy_searches_every_group_under_the_whole_prior():
    """For a hierarchy the MAP objective is log N(y; x(z), s^2) + log p(z_1) + sum_g log p(z_g | z_<g)
    over every group: the search moves each group and lowers that objective."""
    model = FAMILIES["hierarchical"]()
    params = perturbed(vae_jax.init(model, jax.random.key(0)), 2)
    noisy = jnp.asarray(np.random.default_rng(0).uniform(size=(2, *model.data_shape)), jnp.float32)
    z0, _ = restoration._decode_posterior_mean(model, params, noisy)
    z, losses = restoration._maximise_in_latent_space(
        model, params, z0, noisy, jnp.ones(noisy.shape, bool), 2 * np.log(0.1),
        objective="gaussian_noise", steps=20, learning_rate=0.05,
    )  # fmt: skip
    assert len(z) == model.num_groups and float(losses[-1]) < float(losses[0])
    assert all(float(jnp.max(jnp.abs(a - b))) > 1e-3 for a, b in zip(z, z0))
    restored = restoration.denoise_map_tiles(model, params, noisy, 0.1, steps=5)
    assert restored.shape == noisy.shape and bool(jnp.all(jnp.isfinite(restored)))
