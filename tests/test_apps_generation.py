"""Samples, interpolations (lerp / slerp), and resampling a hierarchy's finer groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAMILIES, data_for, perturbed

import vae_jax
from vae_jax import outputs
from vae_jax.apps import generation


@pytest.fixture(scope="module")
def tiny():
    model = vae_jax.mlp_vae((4, 4, 3), hidden=(16,), latent_dim=3, likelihood=vae_jax.DiscretizedLogisticMixture(2))
    return model, vae_jax.init(model, jax.random.key(0))


def test_sample_grids_shapes_and_temperature_zero(tiny):
    model, params = tiny
    grids = generation.sample_grids(model, params, jax.random.key(1), num_samples=5, temperatures=(0.0, 0.7, 1.0))
    assert sorted(grids) == [0.0, 0.7, 1.0]
    for samples in grids.values():
        assert samples.shape == (5, 4, 4, 3) and bool(jnp.all((samples >= 0) & (samples <= 1)))
    # Temperature 0 puts every z at the prior's mean, so every sample is the same image.
    np.testing.assert_allclose(grids[0.0], jnp.broadcast_to(grids[0.0][0], grids[0.0].shape), atol=1e-6)
    assert float(jnp.std(grids[1.0], axis=0).mean()) > 0
    draws = generation.sample_grids(
        model, params, jax.random.key(1), num_samples=3, temperatures=(1.0,), return_mean=False
    )[1.0]
    np.testing.assert_allclose(draws * 255, jnp.round(draws * 255), atol=1e-3)  # 8-bit draws in [0, 1]


def test_lerp_and_slerp_endpoints():
    a, b = jax.random.normal(jax.random.key(0), (2, 3, 2, 4))
    for fn in (generation.lerp, generation.slerp):
        np.testing.assert_allclose(fn(a, b, 0.0), a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fn(a, b, 1.0), b, rtol=1e-6, atol=1e-6)


def test_slerp_stays_on_the_unit_sphere():
    a, b = jax.random.normal(jax.random.key(1), (2, 16))
    a, b = a / jnp.linalg.norm(a), b / jnp.linalg.norm(b)
    path = generation.interpolation_path(a, b, 11, "slerp")
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, rtol=1e-5)
    # Equal angular steps: consecutive points are equally far apart.
    steps = jnp.linalg.norm(jnp.diff(path, axis=0), axis=-1)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-4)
    # A straight line cuts through the sphere's interior.
    assert float(jnp.linalg.norm(generation.lerp(a, b, 0.5))) < 1.0


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(generation.slerp(a, 2 * a, 0.5), 1.5 * a, rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(generation.slerp(a, a, 0.3))))


@pytest.mark.parametrize("method", generation.INTERPOLATIONS)
def test_interpolation_endpoints_decode_posterior_means(tiny, method):
    model, params = tiny
    xa, xb = jax.random.randint(jax.random.key(2), (2, 4, 4, 3), 0, 256)
    strip = generation.interpolate(model, params, xa, xb, num_steps=6, method=method)
    assert strip.shape == (6, 4, 4, 3) and bool(jnp.all((strip >= 0) & (strip <= 1)))
    for x, image in ((xa, strip[0]), (xb, strip[-1])):
        mean, _ = vae_jax.encode(model, params, x)
        expected = model.likelihood.mean(vae_jax.decode(model, params, mean))
        np.testing.assert_allclose(image, expected, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps"):
        generation.interpolate(model, params, xa, xb, num_steps=1, method=method)


def test_resample_finer_needs_several_groups(tiny):
    model, params = tiny
    with pytest.raises(ValueError, match="several latent groups"):
        generation.resample_finer(model, params, jnp.zeros((4, 4, 3), jnp.int32), jax.random.key(0), keep_groups=1)


def test_run_generation_writes_pngs(tiny, tmp_path):
    model, params = tiny
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    report = generation.run_generation(
        model,
        params,
        jax.random.key(0),
        out_dir=tmp_path,
        images_uint8=x,
        num_samples=4,
        temperatures=(0.5, 1.0),
        num_steps=5,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "interpolation_linear.png",
        "interpolation_slerp.png",
        "samples_t0.5.png",
        "samples_t1.png",
    ]
    assert set(report["sample_pixel_std"]) == {0.5, 1.0}
    assert len(report["interpolation_latent_norms"]["slerp"]) == 5


def test_grid_layout():
    batch = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    out = outputs.image_grid(batch, columns=2, padding=1)
    assert out.shape == (3 * 2 + 4, 2 * 3 + 3, 3)
    np.testing.assert_array_equal(out[1:3, 1:4], batch[0])
    np.testing.assert_array_equal(out[4:6, 5:8], batch[3])  # row 1, column 1


@pytest.mark.parametrize("family", [pytest.param("hierarchical", marks=pytest.mark.slow), "stochastic_mlp"])
def test_resample_finer_on_models_of_several_groups(family, tmp_path):
    model = FAMILIES[family]()
    params = perturbed(vae_jax.init(model, jax.random.key(0)), 3)
    x = data_for(model, 1)[0]
    keep_all = generation.resample_finer(model, params, x, jax.random.key(2), keep_groups=model.num_groups, num_samples=3)
    keep_top = generation.resample_finer(model, params, x, jax.random.key(2), keep_groups=1, num_samples=3)
    # Keeping every group leaves nothing to resample: one posterior path, one image.
    np.testing.assert_allclose(keep_all, jnp.broadcast_to(keep_all[0], keep_all.shape), atol=1e-6)
    assert float(jnp.std(keep_top, axis=0).mean()) > 0
    if family == "hierarchical":
        images = np.random.default_rng(0).integers(0, 256, (3, *model.data_shape), dtype=np.uint8)
        report = generation.run_generation(model, params, jax.random.key(1), out_dir=tmp_path, images_uint8=images,
                                           num_samples=4, temperatures=(1.0,), num_steps=4)  # fmt: skip
        assert (tmp_path / "resample_keep1.png").exists() and len(report["files"]) == 1 + 2 + 1
