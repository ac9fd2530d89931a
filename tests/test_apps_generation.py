"""Samples, interpolations (lerp / slerp) and the hierarchical resampling hook."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import outputs
from vae_jax.apps import generation


@pytest.fixture(scope="module")
def tiny():
    model = vae_jax.mlp_vae((4, 4, 3), (16,), 3, likelihood=vae_jax.DiscretizedLogisticMixture(2))
    return model, vae_jax.init(model, jax.random.key(0))


def test_sample_grids_shapes_and_temperature_zero(tiny):
    model, params = tiny
    grids = generation.sample_grids(model, params, jax.random.key(1), 5, (0.0, 0.7, 1.0))
    assert sorted(grids) == [0.0, 0.7, 1.0]
    for samples in grids.values():
        assert samples.shape == (5, 4, 4, 3) and bool(jnp.all((samples >= 0) & (samples <= 1)))
    # Temperature 0 puts every z at the prior's mean, so every sample is the same image.
    np.testing.assert_allclose(grids[0.0], jnp.broadcast_to(grids[0.0][0], grids[0.0].shape), atol=1e-6)
    assert float(jnp.std(grids[1.0], axis=0).mean()) > 0
    draws = generation.sample_grids(model, params, jax.random.key(1), 3, (1.0,), return_mean=False)[1.0]
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
    strip = generation.interpolate(model, params, xa, xb, 6, method)
    assert strip.shape == (6, 4, 4, 3) and bool(jnp.all((strip >= 0) & (strip <= 1)))
    for x, image in ((xa, strip[0]), (xb, strip[-1])):
        mean, _ = vae_jax.encode(model, params, x)
        expected = model.likelihood.mean(vae_jax.decode(model, params, mean))
        np.testing.assert_allclose(image, expected, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps"):
        generation.interpolate(model, params, xa, xb, 1, method)


def test_resample_finer_needs_generate_from(tiny):
    model, params = tiny
    with pytest.raises(ValueError, match="generate_from"):
        generation.resample_finer(model, params, jnp.zeros((4, 4, 3), jnp.int32), jax.random.key(0), 1)


@dataclasses.dataclass(frozen=True)
class _KeepsNothing(vae_jax.VAE):
    """A stand-in with the hierarchical hook: keeps no group (draws from the prior)."""

    def generate_from(self, params, x, keys, keep_groups, temperature):
        assert x.shape[0] == keys.shape[0]
        return self.generate(params, keys, temperature)


def test_resample_finer_with_hook(tiny, tmp_path):
    model, params = tiny
    hier = _KeepsNothing(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)})
    x = jnp.zeros((4, 4, 3), jnp.int32)
    out = generation.resample_finer(hier, params, x, jax.random.key(0), keep_groups=1, num_samples=3)
    assert out.shape == (3, 4, 4, 3)
    report = generation.run_generation(
        hier, params, jax.random.key(1), tmp_path, images_uint8=np.zeros((3, 4, 4, 3), np.uint8), num_steps=4
    )
    assert (tmp_path / "resample_keep1.png").exists()
    assert len(report["files"]) == 4 + 2 + 1


def test_run_generation_writes_pngs(tiny, tmp_path):
    model, params = tiny
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    report = generation.run_generation(
        model,
        params,
        jax.random.key(0),
        tmp_path,
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


def test_resample_finer_on_a_hierarchical_model():
    hierarchical = pytest.importorskip("vae_jax.hierarchical")
    model = hierarchical.hierarchical_vae(
        (8, 8, 3), (8, 16), (1, 2), 2, 1, likelihood=vae_jax.DiscretizedLogisticMixture(2)
    )
    params = vae_jax.init(model, jax.random.key(0))
    x = jax.random.randint(jax.random.key(1), (8, 8, 3), 0, 256)
    keep_all = generation.resample_finer(model, params, x, jax.random.key(2), model.num_groups, 3)
    keep_top = generation.resample_finer(model, params, x, jax.random.key(2), 1, 3)
    # Keeping every group leaves nothing to resample: one posterior path, one image.
    np.testing.assert_allclose(keep_all, jnp.broadcast_to(keep_all[0], keep_all.shape), atol=1e-6)
    assert float(jnp.std(keep_top, axis=0).mean()) > 0
