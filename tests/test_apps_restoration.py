"""Restoration with the VAE prior: tiling is exact and overlapping grids count every pixel once;
the MAP scheme reaches the closed-form posterior of a linear-Gaussian model; the energy's
gradient matches finite differences; inpainting keeps known pixels exactly; the classical
baselines and the noise estimate do what their equations say."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAMILIES, perturbed

import vae_jax
from vae_jax import images
from vae_jax.apps import classical_restoration as classical
from vae_jax.apps import restoration, stein, tiling

KEY = jax.random.key(0)


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


@pytest.mark.parametrize("num_grids", [1, 2, 4])
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (8, 8), (17, 31), (40, 24)])
def test_overlapping_grids_count_every_pixel_once_per_grid(size, num_grids):
    """The blending weights 1/G sum to 1 at every pixel: each grid holds each pixel once, inside."""
    grids = tiling.overlapping_grids(size, (8, 8), num_grids)
    np.testing.assert_array_equal(tiling.coverage(grids), np.full(size, float(num_grids)))
    assert int(tiling.inside(grids).sum()) == num_grids * size[0] * size[1]


def test_grids_cut_the_image_and_its_mirror():
    image = jnp.asarray(_photo(16, 24), jnp.float32)
    grids = tiling.overlapping_grids((16, 24), (8, 8), 2)
    tiles = tiling.grid_tiles(grids, image)
    unshifted, _ = tiling.split(image, (8, 8))
    np.testing.assert_array_equal(tiles[:6], unshifted)  # grid 0: the image's own tiles
    # Grid 1 starts half a tile up and left, mirrored: its first tile's centre is the image's corner.
    np.testing.assert_array_equal(tiles[6][4:, 4:], image[:4, :4])
    np.testing.assert_array_equal(tiles[6][3, 4:], image[1, :4])  # reflect: row -1 is row 1
    assert tiles.shape == (6 + 3 * 4, 8, 8, 3)
    with pytest.raises(ValueError, match="num_grids"):
        tiling.overlapping_grids((16, 24), (8, 8), 3)


# ---------------------------------------------------------------- a linear-Gaussian model


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    """x = W z + b + N(0, s^2 I) on (h, w, 1) tiles, z ~ N(0, I_k), in real units; the encoder is
    the exact posterior mean m(x) = W^T C^-1 (x - b), C = W W^T + s^2 I. W and b are params."""

    data_shape: tuple
    obs_var: float

    @property
    def likelihood(self):
        return vae_jax.Gaussian(self.obs_var, support="real")

    def marginal_cov(self, params):
        w = params["w"]
        return w @ w.T + self.obs_var * jnp.eye(w.shape[0])

    def posterior(self, params, x):
        flat = x.reshape(x.shape[0], -1) - params["b"]
        mean = jnp.linalg.solve(self.marginal_cov(params), flat.T).T @ params["w"]
        return mean, jnp.zeros_like(mean)

    def decoder_output(self, params, z):
        return (z @ params["w"].T + params["b"]).reshape(z.shape[0], *self.data_shape, 1)


def _linear_gaussian(dim_z, seed=0, scale=0.15, shape=(3, 3, 1), obs_var=0.01):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    params = {
        "w": jnp.asarray(scale * rng.normal(size=(d, dim_z)), jnp.float32),
        "b": jnp.asarray(rng.uniform(0.4, 0.6, d), jnp.float32),
    }
    return LinearGaussian(shape, obs_var), params


def _closed_form_posterior(model, params, y, sigma):
    """MAP = posterior mean of x | y under x ~ N(b, C), y = x + N(0, sigma^2): both formulas."""
    c = np.asarray(model.marginal_cov(params), np.float64)
    b, flat = np.asarray(params["b"], np.float64), np.asarray(y, np.float64).reshape(-1)
    precision = np.eye(len(b)) / sigma**2 + np.linalg.inv(c)
    map_x = np.linalg.solve(precision, flat / sigma**2 + np.linalg.solve(c, b))
    posterior_mean = b + c @ np.linalg.solve(c + sigma**2 * np.eye(len(b)), flat - b)  # the Wiener filter
    np.testing.assert_allclose(map_x, posterior_mean, atol=1e-10)
    return map_x.reshape(y.shape)


@pytest.mark.parametrize("dim_z", [1, 3])
def test_map_of_a_linear_gaussian_model_is_its_closed_form_posterior(dim_z):
    """Re-encoding at the exact posterior mean, holding z and descending E(x): the fixed point is
    the MAP (= posterior mean) of x | y under the marginal N(b, W W^T + s^2 I)."""
    model, params = _linear_gaussian(dim_z)
    sigma = 0.1
    y = jnp.asarray(np.random.default_rng(1).uniform(0.3, 0.7, model.data_shape), jnp.float32)
    result = restoration.denoise(
        model, params, y, sigma, num_grids=1, steps=25, max_iterations=60, learning_rate=0.5, stopping="discrepancy",
        target_discrepancy=None,
    )
    expected = _closed_form_posterior(model, params, y, sigma)
    np.testing.assert_allclose(np.asarray(result.image), expected, atol=2e-3)
    assert result.iterations == 60 and not result.sigma_estimated
    # Far from y: the prior pulls it (so the check is not passed by returning y).
    assert float(jnp.max(jnp.abs(result.image - y))) > 0.02


@pytest.mark.parametrize("cycle_grids", [True, False])
def test_overlapping_grids_leave_no_seams(cycle_grids):
    """A prior the same at every pixel (W = 0) and a constant y: the MAP is the same constant,
    (y / sigma^2 + b / s^2) / (1 / sigma^2 + 1 / s^2), at every pixel, tile borders included,
    whether each block takes one grid in turn or all of them."""
    model, params = _linear_gaussian(1, scale=0.0, shape=(4, 4, 1))
    params["b"] = jnp.full_like(params["b"], 0.3)
    sigma, y = 0.1, jnp.full((10, 13, 1), 0.6)
    result = restoration.denoise(
        model, params, y, sigma, num_grids=2, cycle_grids=cycle_grids, steps=25, max_iterations=40,
        learning_rate=0.5, stopping="discrepancy", target_discrepancy=None,
    )  # fmt: skip
    expected = (0.6 / sigma**2 + 0.3 / model.obs_var) / (1 / sigma**2 + 1 / model.obs_var)
    np.testing.assert_allclose(np.asarray(result.image), expected, atol=2e-3)


def test_cycled_blocks_take_each_grid_alone_in_turn():
    grids = tiling.overlapping_grids((16, 24), (8, 8), 4)
    assert restoration.block_grids(grids, cycle=False) == [grids]
    cycled = restoration.block_grids(grids, cycle=True)
    assert [g.shifts for g in cycled] == [(shift,) for shift in grids.shifts]
    # Together the cycled grids cover each pixel as often as the grids do in one block.
    np.testing.assert_array_equal(sum(np.asarray(tiling.coverage(g)) for g in cycled), tiling.coverage(grids))


def test_the_discrepancy_principle_stops_at_the_first_residual_past_the_target():
    model, params = _linear_gaussian(2)
    # Far from the prior's mean b ~ 0.5: the MAP's residual is well past 1, so the run stops before it.
    y = jnp.asarray(np.where(np.random.default_rng(2).random((6, 6, 1)) < 0.5, 0.1, 0.9), jnp.float32)
    result = restoration.denoise(
        model, params, y, 0.05, num_grids=2, steps=5, max_iterations=200, learning_rate=0.5, start="noisy",
        stopping="discrepancy",
    )  # fmt: skip
    residuals = result.residuals
    assert residuals[-1] >= 1.0 and all(r < 1.0 for r in residuals[:-1])
    overshot = residuals[-1] > restoration.DISCREPANCY_OVERSHOOT
    assert result.iterations == len(residuals) - (1 if overshot else 0)
    if not overshot:
        np.testing.assert_allclose(float(jnp.mean(jnp.square(y - result.image))) / 0.05**2, residuals[-1], rtol=1e-4)


def test_a_start_further_from_y_than_the_noise_stops_when_the_residual_falls_to_the_target():
    """From a blurred start the residual begins above the target and the run ends at the first block
    at or below it (this y's MAP has a residual near 2.2, so a target of 3 is reached on the way)."""
    model, params = _linear_gaussian(2)
    y = jnp.asarray(np.where(np.random.default_rng(2).random((6, 6, 1)) < 0.5, 0.1, 0.9), jnp.float32)
    target = 3.0
    start = restoration.denoising_start(y, 0.05, "gaussian_blur")
    assert float(jnp.mean(jnp.square(y - start))) / 0.05**2 > target
    result = restoration.denoise(
        model, params, y, 0.05, num_grids=2, steps=5, max_iterations=200, learning_rate=0.5, start="gaussian_blur",
        stopping="discrepancy", target_discrepancy=target,
    )  # fmt: skip
    residuals = result.residuals
    assert residuals[-1] <= target and all(r > target for r in residuals[:-1])
    overshot = residuals[-1] < target / restoration.DISCREPANCY_OVERSHOOT
    assert result.iterations == len(residuals) - (1 if overshot and len(residuals) > 1 else 0)


@pytest.mark.parametrize(("target", "expected_start"), [(2.3, "noisy"), (1.0, "total_variation")])
def test_auto_keeps_the_tv_start_unless_the_discrepancy_accepts_it_at_once(target, expected_start):
    """This y's TV image has a residual of 2.27: a target of 2.3 is met by the first block from it
    (the prior had no say, so auto runs again from y); a target of 1 is never met from it."""
    model, params = _linear_gaussian(2)
    y = jnp.asarray(np.where(np.random.default_rng(2).random((6, 6, 1)) < 0.5, 0.1, 0.9), jnp.float32)
    options = dict(steps=5, max_iterations=6, learning_rate=0.5, stopping="discrepancy", target_discrepancy=target)
    auto = restoration.denoise(model, params, y, 0.05, start="auto", **options)
    from_tv = restoration.denoise(model, params, y, 0.05, start="total_variation", **options)
    assert (len(from_tv.residuals) == 1) == (expected_start == "noisy")
    expected = restoration.denoise(model, params, y, 0.05, start=expected_start, **options)
    assert auto.start == expected.start == expected_start
    np.testing.assert_array_equal(np.asarray(auto.image), np.asarray(expected.image))
    assert auto.residuals == expected.residuals


def test_stein_risk_of_a_linear_shrinkage_is_unbiased_and_its_divergence_exact():
    """f(y) = a y + (1 - a) m: the difference quotient b . (f(y + eps b) - f(y)) / eps = a ||b||^2,
    exactly (f is linear; its mean over b is div f = a N), and
    the risk's mean over noise draws is the closed form E ||f(y) - x||^2 / N = (1 - a)^2
    ||x - m||^2 / N + a^2 sigma^2, to within the mean's own sampling error."""
    a, m, sigma, epsilon = 0.6, 0.4, 0.1, 0.01
    x = jnp.asarray(np.random.default_rng(3).uniform(0.0, 1.0, (16, 16, 3)), jnp.float32)
    shrink = lambda y: a * y + (1 - a) * m
    draws = 400
    risks, errors = [], []
    for draw in range(draws):
        noise_key, probe_key = jax.random.split(jax.random.fold_in(KEY, draw))
        y = restoration.add_gaussian_noise(x, sigma, noise_key)
        probe = jax.random.normal(probe_key, x.shape)
        risk = stein.risk(y, shrink(y), shrink(y + epsilon * probe), probe, epsilon, sigma)
        plain = (jnp.sum(jnp.square(y - shrink(y))) - x.size * sigma**2 + 2 * sigma**2 * a * jnp.vdot(probe, probe)) / x.size
        np.testing.assert_allclose(float(risk), float(plain), rtol=2e-3)
        risks.append(float(risk))
        errors.append(float(jnp.mean(jnp.square(shrink(y) - x))))
    expected = (1 - a) ** 2 * float(jnp.mean(jnp.square(x - m))) + a**2 * sigma**2
    standard_error = np.std(risks) / np.sqrt(draws)
    assert abs(np.mean(risks) - expected) < 4 * standard_error
    assert abs(np.mean(errors) - expected) < 4 * np.std(errors) / np.sqrt(draws)
    # The risk is not the residual alone: without the divergence it would be off by 2 a sigma^2.
    assert 2 * a * sigma**2 > 20 * standard_error


def test_sure_stopping_answers_the_block_of_least_risk_and_the_twin_leaves_the_run_alone():
    """The answer is the block of least smoothed estimated risk (the start is block 0), the run ends
    SURE_PATIENCE blocks after it, and the run itself is the plain MAP's (the twin on the
    perturbed y has its own z and its own energy)."""
    model, params = _linear_gaussian(2)
    # A photo-like x the prior fits loosely: the MAP path's risk falls, then rises as it over-smooths.
    x = jnp.clip(jnp.asarray(0.5 + 0.2 * np.random.default_rng(5).normal(size=(6, 6, 1)), jnp.float32), 0, 1)
    y = x + 0.1 * jax.random.normal(jax.random.key(7), x.shape)
    options = dict(num_grids=2, steps=5, max_iterations=40, learning_rate=0.5, start="noisy")
    result = restoration.denoise(model, params, y, 0.1, key=KEY, **options)
    assert len(result.risks) == len(result.residuals) + 1
    assert result.iterations == int(np.argmin(restoration.smoothed_risks(result.risks)))
    assert len(result.residuals) == min(result.iterations + restoration.SURE_PATIENCE, 40)
    assert 0 < result.iterations < len(result.residuals)  # a minimum inside the run, so the check bites
    plain = restoration.denoise(
        model, params, y, 0.1, **{**options, "max_iterations": result.iterations}, stopping="discrepancy",
        target_discrepancy=None,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(result.image), np.asarray(plain.image), atol=1e-6)
    np.testing.assert_allclose(result.residuals[: result.iterations], plain.residuals, rtol=1e-5)


def test_sure_auto_takes_the_start_of_lower_risk():
    model, params = _linear_gaussian(2)
    y = jnp.asarray(np.where(np.random.default_rng(2).random((6, 6, 1)) < 0.5, 0.1, 0.9), jnp.float32)
    options = dict(key=KEY, steps=5, max_iterations=6, learning_rate=0.5)
    runs = {start: restoration.denoise(model, params, y, 0.05, start=start, **options)
            for start in ("auto", "total_variation", "noisy")}  # fmt: skip
    tv, noisy = runs["total_variation"], runs["noisy"]
    if tv.iterations > 2:  # the prior had its say from TV: auto keeps it
        expected = tv
    else:
        expected = min(tv, noisy, key=lambda result: min(result.risks))
    assert runs["auto"].start == expected.start
    np.testing.assert_array_equal(np.asarray(runs["auto"].image), np.asarray(expected.image))


def test_least_risk_blend_of_the_clean_image_and_y_finds_the_clean_image():
    """Candidates x itself (a constant f, divergence 0) and y: the risk E ||w_1 x + w_2 y - x||^2 =
    (w_1 + w_2 - 1)^2 ||x||^2 + w_2^2 N sigma^2 is least at w = (1, 0); SURE's weights land there to
    within its sampling error, and no other weights have a lower estimated risk."""
    x = jnp.asarray(np.random.default_rng(4).uniform(0.0, 1.0, (64, 64, 3)), jnp.float32)
    sigma, epsilon = 0.1, 0.01
    noise_key, probe_key = jax.random.split(KEY)
    y = restoration.add_gaussian_noise(x, sigma, noise_key)
    direction = stein.probe(probe_key, x.shape)
    blend = stein.least_risk_blend(y, [x, y], [x, y + epsilon * direction], direction, epsilon, sigma)
    np.testing.assert_allclose(blend.weights, [1.0, 0.0], atol=0.02)
    np.testing.assert_allclose(blend.risks[1], sigma**2, rtol=0.05)  # y's own risk is sigma^2
    assert blend.risk <= min(blend.risks)
    for other in ([1.02, 0.0], [0.98, 0.02], [0.9, 0.1]):
        estimate = other[0] * x + other[1] * y
        perturbed = other[0] * x + other[1] * (y + epsilon * direction)
        assert float(stein.risk(y, estimate, perturbed, direction, epsilon, sigma)) >= blend.risk - 1e-7


def test_convex_blend_weights_are_the_simplex_minimum_of_the_risk():
    """Three candidates: the convex weights are >= 0, sum to 1, and no point of a fine grid over
    the simplex has a lower SURE; the unconstrained weights have a SURE no higher still."""
    x = jnp.asarray(np.random.default_rng(5).uniform(0.0, 1.0, (32, 32, 3)), jnp.float32)
    sigma, epsilon = 0.1, 0.01
    noise_key, probe_key = jax.random.split(KEY)
    y = restoration.add_gaussian_noise(x, sigma, noise_key)
    direction = stein.probe(probe_key, x.shape)
    shrinkers = [lambda v: 0.3 * v + 0.35, lambda v: 0.9 * v + 0.05, lambda v: 0.6 * v + 0.1]
    estimates = [f(y) for f in shrinkers]
    perturbed = [f(y + epsilon * direction) for f in shrinkers]
    convex = stein.least_risk_blend(y, estimates, perturbed, direction, epsilon, sigma)
    assert np.all(convex.weights >= 0) and convex.weights.sum() == pytest.approx(1.0)
    grid = np.linspace(0, 1, 41)
    for w0 in grid:
        for w1 in grid[grid <= 1 - w0 + 1e-12]:
            w = (w0, w1, 1 - w0 - w1)
            mix = sum(wk * e for wk, e in zip(w, estimates))
            mix_perturbed = sum(wk * p for wk, p in zip(w, perturbed))
            assert float(stein.risk(y, mix, mix_perturbed, direction, epsilon, sigma)) >= convex.risk - 1e-6
    free = stein.least_risk_blend(y, estimates, perturbed, direction, epsilon, sigma, convex=False)
    assert free.risk <= convex.risk + 1e-7


def test_an_impossible_risk_hands_the_answer_to_the_discrepancy_rule(monkeypatch):
    """Where SURE estimates a negative mean squared error, denoise answers by the discrepancy rule
    (and says so), and the blend is the MAP alone."""
    model, params = _linear_gaussian(2)
    y = jnp.asarray(np.where(np.random.default_rng(2).random((6, 6, 1)) < 0.5, 0.1, 0.9), jnp.float32)
    options = dict(steps=5, max_iterations=6, learning_rate=0.5, start="noisy")
    monkeypatch.setattr(restoration.stein, "risk", lambda *args: -1.0)
    result = restoration.denoise(model, params, y, 0.05, key=KEY, **options)
    expected = restoration.denoise(model, params, y, 0.05, stopping="discrepancy", **options)
    assert result.stopping == "discrepancy" and result.risks and result.twin_image is None
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(expected.image))
    blended = restoration.blend_denoised(result, y, KEY)
    assert blended.weights == {"vae_map": 1.0} and np.isnan(blended.risk)
    np.testing.assert_array_equal(np.asarray(blended.image), np.asarray(result.image))


def test_blend_weighs_the_map_the_classical_denoisers_and_y(local_conv):
    """The blend's risk is at most each candidate's own (each alone is one choice of weights), the
    MAP's own risk is the one its SURE stopping chose, and unknown denoisers are refused."""
    model, params = local_conv
    clean = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (12, 14, model.data_shape[-1])), jnp.float32)
    noisy = restoration.add_gaussian_noise(clean, 0.1, jax.random.key(3))
    result = restoration.blend(model, params, noisy, 0.1, key=KEY, steps=2, max_iterations=3)
    assert set(result.weights) == set(result.risks) == {"vae_map", "non_local_means", "noisy"}
    assert result.risk <= min(result.risks.values()) + 1e-9
    np.testing.assert_allclose(result.risks["vae_map"], min(result.denoised.risks), rtol=1e-4)
    assert result.image.shape == clean.shape and bool(jnp.all((result.image >= 0) & (result.image <= 1)))
    with pytest.raises(ValueError, match="with_denoisers"):
        restoration.blend(model, params, noisy, 0.1, key=KEY, with_denoisers=("median",))


def test_bm3d_of_an_image_smaller_than_its_blocks_is_mirrored_up_and_cropped_back():
    pytest.importorskip("bm3d")
    for channels in (1, 3):
        noisy = np.random.default_rng(0).uniform(0.3, 0.7, (5, 7, channels)).astype(np.float32)
        result = classical.bm3d(noisy, 0.1)
        assert result.shape == noisy.shape and np.all(np.isfinite(result))
        assert np.std(result) < np.std(noisy)  # it denoised


def test_an_unknown_start_is_refused():
    with pytest.raises(ValueError, match="start"):
        restoration.denoising_start(jnp.zeros((8, 8, 3)), 0.1, "median")


# ---------------------------------------------------------------- the energy


def test_energy_gradient_matches_finite_differences(local_conv):
    """The local autoregressive likelihood's log p of a continuous x: grad . v against central
    differences (E(x + h v) - E(x - h v)) / 2h, pixels away from the 0 and 255 edge bins. The
    likelihood computes in float32, so h is two pixel levels and v has a large derivative."""
    model, params = local_conv
    rng = np.random.default_rng(0)
    grids = tiling.overlapping_grids((11, 13), model.data_shape[:2], 2)
    x = jnp.asarray(rng.uniform(30, 225, (11, 13, 3)), jnp.float32)
    y = x + jnp.asarray(rng.normal(0, 20, x.shape), jnp.float32)
    outs = restoration.decoded_posterior_means(model, params, grids, x)
    energy = jax.jit(lambda v: restoration.denoising_energy(model, grids, v, y, 20.0, outs))
    prior = jax.jit(lambda v: restoration.prior_log_prob(model, grids, v, outs))
    for function in (energy, prior):
        grad = jax.grad(function)(x)
        for seed in range(3):
            direction = jnp.sign(grad) * jnp.asarray(np.random.default_rng(seed + 1).uniform(0.5, 1.5, x.shape))
            h = 2.0
            numeric = (float(function(x + h * direction)) - float(function(x - h * direction))) / (2 * h)
            analytic = float(jnp.sum(grad * direction))
            assert analytic == pytest.approx(numeric, rel=1e-3) and abs(analytic) > 0.1


def test_inpainting_energy_does_not_move_known_pixels(local_conv):
    model, params = local_conv
    rng = np.random.default_rng(1)
    grids = tiling.overlapping_grids((9, 9), model.data_shape[:2], 2)
    image = jnp.asarray(rng.uniform(0, 255, (9, 9, 3)), jnp.float32)
    known = jnp.asarray(rng.random((9, 9, 1)) < 0.5).repeat(3, axis=-1)
    outs = restoration.decoded_posterior_means(model, params, grids, image)
    grad = jax.grad(lambda u: restoration.inpainting_energy(model, grids, u, image, known, outs))(image + 3.0)
    assert bool(jnp.all(grad[known] == 0)) and bool(jnp.any(grad[~known] != 0))


# ---------------------------------------------------------------- denoising and inpainting end to end


@pytest.mark.parametrize("fixture", ["discrete_mlp", "local_conv", "gaussian_mlp_2d"])
def test_denoise_any_size_returns_an_image(fixture, request):
    model, params = request.getfixturevalue(fixture)
    channels = model.data_shape[-1]
    for size in ((10, 19), (3, 2)):  # the second is smaller than a tile: mirrored up to one, not refused
        clean = jnp.asarray(np.random.default_rng(0).uniform(size=(*size, channels)), jnp.float32)
        noisy = restoration.add_gaussian_noise(clean, 0.2, jax.random.key(0))
        result = restoration.denoise(model, params, noisy, 0.2, key=KEY, steps=3, max_iterations=3)
        assert result.image.shape == clean.shape and bool(jnp.all((result.image >= 0) & (result.image <= 1)))
        # One residual a block run (SURE may end it early) and a risk for the start and each block.
        assert 1 <= len(result.residuals) <= 3 and len(result.risks) == len(result.residuals) + 1
        assert result.iterations == int(np.argmin(restoration.smoothed_risks(result.risks)))


def test_denoise_of_a_hierarchy_runs():
    model = FAMILIES["hierarchical"]()
    params = perturbed(vae_jax.init(model, jax.random.key(0)), 2)
    noisy = jnp.asarray(np.random.default_rng(0).uniform(size=(9, 12, 3)), jnp.float32)
    result = restoration.denoise(model, params, noisy, 0.1, key=KEY, steps=2, max_iterations=2)
    assert result.image.shape == noisy.shape and bool(jnp.all(jnp.isfinite(result.image)))


def test_denoise_estimates_a_missing_sigma(discrete_mlp):
    model, params = discrete_mlp
    clean = jnp.asarray(_smooth_image(24, 24), jnp.float32)
    noisy = restoration.add_gaussian_noise(clean, 0.1, jax.random.key(0))
    result = restoration.denoise(model, params, noisy, None, key=KEY, steps=2, max_iterations=1)
    assert result.sigma_estimated and result.sigma == pytest.approx(classical.estimate_noise_sigma(noisy))


@pytest.mark.parametrize(
    ("sigma", "options", "message"),
    [
        (0.0, {}, "sigma: expected a finite number > 0"),
        (float("nan"), {}, "sigma: expected a finite number > 0"),
        (-0.1, {}, "sigma"),
        (0.1, {"num_grids": 3}, "num_grids"),
        (0.1, {"steps": 0}, "steps"),
        (0.1, {"max_iterations": 0}, "max_iterations"),
    ],
)
def test_denoise_refuses_bad_settings(discrete_mlp, sigma, options, message):
    model, params = discrete_mlp
    with pytest.raises(ValueError, match=message):
        restoration.denoise(model, params, jnp.zeros((8, 8, 3)), sigma, key=KEY, **options)


def test_wrong_images_are_refused(discrete_mlp):
    model, params = discrete_mlp
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        restoration.denoise(model, params, jnp.zeros((8, 8, 1)), 0.1, key=KEY)
    with pytest.raises(ValueError, match="finite"):
        restoration.denoise(model, params, jnp.full((8, 8, 3), jnp.nan), 0.1, key=KEY)
    with pytest.raises(ValueError, match="key: SURE"):
        restoration.denoise(model, params, jnp.zeros((8, 8, 3)), 0.1)
    with pytest.raises(ValueError, match="stopping"):
        restoration.denoise(model, params, jnp.zeros((8, 8, 3)), 0.1, key=KEY, stopping="early")
    with pytest.raises(ValueError, match="boolean"):
        restoration.inpaint(model, params, jnp.zeros((8, 8, 3)), jnp.ones((8, 8)), key=KEY)
    with pytest.raises(ValueError, match="key: validation"):
        restoration.inpaint(model, params, jnp.zeros((8, 8, 3)), jnp.ones((8, 8), bool))


@pytest.mark.parametrize("start", restoration.FILLS)
@pytest.mark.parametrize("fixture", ["discrete_mlp", "gaussian_mlp_2d", "local_conv"])
def test_inpainting_keeps_known_pixels_exactly(fixture, start, request):
    model, params = request.getfixturevalue(fixture)
    channels = model.data_shape[-1]
    image_uint8 = np.random.default_rng(3).integers(0, 256, (11, 13, channels), dtype=np.uint8)
    image = jnp.asarray(images.to_unit(image_uint8))
    mask = restoration.random_pixel_mask((11, 13), jax.random.key(4), 0.6)
    out = restoration.inpaint(model, params, image, mask, steps=3, iterations=2, start=start, stopping="fixed").image
    assert out.shape == image.shape and out.dtype == jnp.float32
    assert bool(jnp.all((out >= 0) & (out <= 1)))
    mask3 = np.broadcast_to(np.asarray(mask)[..., None], image.shape)
    np.testing.assert_array_equal(np.asarray(out)[mask3], np.asarray(image)[mask3])
    np.testing.assert_array_equal(images.to_uint8(out)[mask3], image_uint8[mask3])  # ... and through uint8
    # The unknown pixels moved from the start fill: the prior did something.
    fill = classical.biharmonic_fill(image, mask) if start == "biharmonic" else classical.mean_fill(image, mask)
    assert not np.allclose(np.asarray(out)[~mask3], np.asarray(fill)[~mask3])


def test_inpainting_warms_its_learning_rate_up_over_the_first_blocks(local_conv):
    """Three blocks at learning rate 2 are Adam at 0.5, 1, then 2, re-encoding between, from the fill."""
    import optax

    model, params = local_conv
    image = jnp.asarray(images.to_unit(np.random.default_rng(3).integers(0, 256, (12, 12, 3), dtype=np.uint8)))
    mask = restoration.broadcast_mask(restoration.random_pixel_mask((12, 12), jax.random.key(4), 0.6), image.shape)
    out = restoration.inpaint(model, params, image, mask, steps=2, iterations=3, stopping="fixed", learning_rate=2.0)
    assert restoration.INPAINT_WARMUP_BLOCKS == 2
    grids = tiling.overlapping_grids((12, 12), model.data_shape[:2], 2)
    free = 255.0 * jnp.asarray(classical.biharmonic_fill(image, mask), jnp.float32)
    state = optax.adam(1.0).init(free)
    for rate in (0.5, 1.0, 2.0):
        outs = restoration.decoded_posterior_means(model, params, grids, jnp.where(mask, 255.0 * image, free))
        optimiser = optax.adam(rate)
        for _ in range(2):
            grad = jax.grad(restoration.inpainting_energy, argnums=2)(model, grids, free, 255.0 * image, mask, outs)
            updates, state = optimiser.update(grad, state, free)
            free = optax.apply_updates(free, updates)
    expected = jnp.where(mask, image, jnp.clip(free, 0.0, 255.0) / 255.0)
    np.testing.assert_allclose(np.asarray(out.image), np.asarray(expected), atol=2e-5)


def test_validation_picks_the_blocks_of_least_error_on_the_held_out_pixels(local_conv):
    """The validation run's errors: the fill's first, then each block's, ending VALIDATION_PATIENCE
    blocks after the least; the answer is the whole-mask run of that many blocks (fixed stopping
    reproduces it), known pixels exact."""
    model, params = local_conv
    image = jnp.asarray(images.to_unit(np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)))
    mask = restoration.random_pixel_mask((24, 20), jax.random.key(4), 0.6)
    options = dict(steps=3, iterations=6)
    result = restoration.inpaint(model, params, image, mask, key=KEY, **options)
    errors = result.validation_errors
    assert result.iterations == int(np.argmin(errors))
    assert len(errors) - 1 == min(result.iterations + restoration.VALIDATION_PATIENCE, 6)
    fixed = restoration.inpaint(model, params, image, mask, stopping="fixed", **{**options, "iterations": max(result.iterations, 1)})
    if result.iterations == 0:  # the fill itself
        expected = classical.biharmonic_fill(image, mask)
    else:
        expected = fixed.image
    np.testing.assert_allclose(np.asarray(result.image), np.asarray(expected), atol=1e-6)
    # The error is measured where the pixels are known: the fill's is its error at those pixels.
    held_out = restoration.validation_pixels(mask, KEY)
    first_fill = classical.biharmonic_fill(image, mask & ~held_out)
    expected_error = float(jnp.mean(jnp.square(first_fill - image)[held_out]))
    np.testing.assert_allclose(errors[0], expected_error, rtol=1e-5)


def test_validation_pixels_are_the_known_pixels_nearest_the_unknown_ones():
    """A centre hole: the held-out pixels are the ring of known pixels around it, none farther from
    the hole than any pixel kept; a random mask: a random draw among the known pixels touching an
    unknown one; the count is the fraction of the known pixels; nothing unknown, nothing held out."""
    from scipy import ndimage

    hole = np.asarray(restoration.centre_square_mask((40, 36), 0.5))
    held_out = np.asarray(restoration.validation_pixels(hole, KEY, 0.1))
    assert held_out.sum() == round(0.1 * hole.sum()) and not np.any(held_out & ~hole)
    distance = ndimage.distance_transform_edt(hole)
    assert distance[held_out].max() <= distance[hole & ~held_out].min()
    # The 18x18 hole's first ring (72 edge neighbours, 4 corners) is all held out, the rest at distance 2.
    assert np.all(held_out[distance == 1.0]) and np.all(held_out[distance == np.sqrt(2.0)])
    assert distance[held_out].max() == 2.0
    scattered = np.asarray(restoration.random_pixel_mask((40, 36), jax.random.key(5), 0.5))
    held_out = np.asarray(restoration.validation_pixels(scattered, KEY))
    assert held_out.sum() == round(restoration.VALIDATION_FRACTION * scattered.sum())
    assert np.all(ndimage.distance_transform_edt(scattered)[held_out] == 1.0)
    other_draw = np.asarray(restoration.validation_pixels(scattered, jax.random.key(9)))
    assert np.any(other_draw != held_out)  # ties are broken by the key
    assert not np.any(np.asarray(restoration.validation_pixels(np.ones((8, 8), bool), KEY)))


# ---------------------------------------------------------------- classical baselines and the report


def _smooth_image(height, width):
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    base = 0.5 + 0.2 * np.sin(3 * rows) * np.cos(2 * cols)
    return np.stack([base, 0.8 * base + 0.1, 0.6 * base + 0.2], axis=-1)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_noise_estimate_is_close_to_the_true_sigma(sigma):
    clean = _smooth_image(128, 128)
    noisy = clean + sigma * np.random.default_rng(0).normal(size=clean.shape)
    assert classical.estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.05)


def test_noise_estimate_of_a_noiseless_ramp_is_zero():
    """Daubechies-2 has two vanishing moments: a linear image has no diagonal detail at all."""
    rows, cols = np.mgrid[0:32, 0:40]
    ramp = np.repeat((0.1 + 0.01 * rows + 0.015 * cols)[..., None], 3, axis=-1)
    assert classical.estimate_noise_sigma(ramp) == pytest.approx(0.0, abs=1e-12)


def test_noise_estimate_agrees_with_scikit_image():
    pytest.importorskip("pywt")
    from skimage.restoration import estimate_sigma

    noisy = _smooth_image(96, 96) + 0.05 * np.random.default_rng(1).normal(size=(96, 96, 3))
    expected = estimate_sigma(noisy, average_sigmas=True, channel_axis=-1)
    assert classical.estimate_noise_sigma(noisy) == pytest.approx(expected, rel=0.03)


def test_noise_estimate_refuses_an_image_too_small_for_the_wavelet():
    with pytest.raises(ValueError, match="at least 4x4"):
        classical.estimate_noise_sigma(np.zeros((3, 8, 3)))


def test_biharmonic_fill_is_exact_on_a_linear_ramp():
    """A linear function is biharmonic: filling a hole in a ramp gives the ramp back."""
    rows, cols = np.mgrid[0:16, 0:20]
    ramp = np.repeat((0.1 + 0.02 * rows + 0.03 * cols)[..., None] / 2, 3, axis=-1).astype(np.float32)
    mask = np.asarray(restoration.centre_square_mask((16, 20)))
    filled = classical.biharmonic_fill(ramp, mask)
    np.testing.assert_allclose(filled, ramp, atol=1e-4)
    np.testing.assert_array_equal(filled[mask], ramp[mask])


def test_mean_fill_and_masks():
    image = jnp.asarray(images.to_unit(_photo(6, 6)))
    mask = restoration.centre_square_mask((6, 6), 0.5)
    assert int((~mask).sum()) == 9
    filled = classical.mean_fill(image, mask)
    np.testing.assert_array_equal(filled[mask], image[mask])
    np.testing.assert_allclose(filled[2, 2], image[mask].mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="boolean"):
        classical.mean_fill(image, mask.astype(jnp.float32))


def test_classical_denoisers_lower_the_error_of_a_smooth_image():
    clean = _smooth_image(32, 32).astype(np.float32)
    noisy = clean + 0.1 * np.random.default_rng(0).normal(size=clean.shape).astype(np.float32)
    error = lambda x: float(np.mean(np.square(np.asarray(x) - clean)))
    methods = [classical.total_variation, classical.non_local_means]
    if classical.bm3d_available():
        methods.append(classical.bm3d)
    for method in methods:
        assert error(method(noisy, 0.1)) < 0.5 * error(noisy), method.__name__
    constant = jnp.full((9, 9, 3), 0.25)
    np.testing.assert_allclose(classical.gaussian_blur(constant, 1.0), constant, rtol=1e-6)
    assert float(restoration.psnr(constant + 0.1, constant)) == pytest.approx(20.0, rel=1e-4)
    assert float(restoration.ssim(constant, constant)) == pytest.approx(1.0)


def test_report_scores_every_method_and_names_the_best(discrete_mlp, tmp_path):
    model, params = discrete_mlp
    report = restoration.run_restoration(
        model, params, _photo(12, 16), jax.random.key(0), out_dir=tmp_path, steps=2, max_iterations=2, iterations=2
    )
    expected = {
        "denoise": {"noisy", "gaussian_blur", "total_variation", "non_local_means", "vae_map", "vae_blend"}
        | ({"bm3d"} if classical.bm3d_available() else set()),
        "inpaint_centre": {"masked", "mean_fill", "biharmonic", "vae_map"},
        "inpaint_random": {"masked", "mean_fill", "biharmonic", "vae_map"},
    }
    for task, methods in expected.items():
        assert set(report[task]) == methods
        for scores in report[task].values():
            assert np.isfinite(scores["psnr"]) and -1 <= scores["ssim"] <= 1 and isinstance(scores["seconds"], float)
        best = report[f"{task}_answer"]
        assert best not in ("noisy", "masked")
        assert report[task][best]["psnr"] == max(s["psnr"] for m, s in report[task].items() if m not in ("noisy", "masked"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(restoration.output_files())
