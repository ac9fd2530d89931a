"""PSNR, SSIM and MS-SSIM (vae_jax.image_quality) against hand computations and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from vae_jax import image_quality
from vae_jax.image_quality import ms_ssim, ms_ssim_db, psnr, ssim


def _noisy(image, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def camera():
    return data.camera()[::2, ::2]  # 256 x 256 grey


@pytest.fixture(scope="module")
def chelsea():
    return data.chelsea()[:200, :240]  # colour, just over the MS-SSIM minimum


def test_psnr_by_hand():
    reference = np.zeros((2, 2, 3), np.uint8)
    test = reference.copy()
    test[0, 0, 0] = 12  # one sub-pixel off by 12 of 12: MSE = 144 / 12 = 12
    assert psnr(reference, test) == pytest.approx(10 * math.log10(255**2 / 12), rel=1e-12)
    assert psnr(reference, reference) == math.inf
    grey = np.array([[10, 20], [30, 40]], np.uint8)
    # errors 1, -2, 3, 0: MSE = 14 / 4
    off = np.array([[11, 18], [33, 40]], np.uint8)
    assert psnr(grey, off) == pytest.approx(10 * math.log10(255**2 / 3.5), rel=1e-12)


def test_equal_images_score_one(camera, chelsea):
    assert ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(chelsea, chelsea) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sigma", [3.0, 20.0])
def test_ssim_matches_scikit_image_on_grey(camera, sigma):
    noisy = _noisy(camera, sigma)
    expected = structural_similarity(
        camera, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(camera, noisy) == pytest.approx(expected, abs=1e-10)
    assert ssim(camera[..., None], noisy[..., None]) == pytest.approx(expected, abs=1e-10)


def test_ssim_matches_scikit_image_on_colour_as_the_channel_mean(chelsea):
    noisy = _noisy(chelsea, 10.0)
    expected = structural_similarity(
        chelsea, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
    )
    assert ssim(chelsea, noisy) == pytest.approx(expected, abs=1e-10)


def test_more_noise_scores_lower(camera, chelsea):
    for image in (camera, chelsea):
        scores = [ms_ssim(image, _noisy(image, sigma)) for sigma in (2.0, 8.0, 30.0)]
        assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
        psnrs = [psnr(image, _noisy(image, sigma)) for sigma in (2.0, 8.0, 30.0)]
        assert psnrs[0] > psnrs[1] > psnrs[2]


def test_ms_ssim_is_the_weighted_product_over_scales(camera):
    # Scale by scale with the module's own pieces: cs at scales 1..4, full SSIM at scale 5.
    noisy = _noisy(camera, 12.0).astype(np.float64)
    x, y = camera.astype(np.float64), noisy
    expected = 1.0
    for scale, weight in enumerate(image_quality.MS_SSIM_WEIGHTS):
        full, cs = image_quality._ssim_and_cs(x, y)
        expected *= (full if scale == 4 else cs) ** weight
        x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
        y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
    assert ms_ssim(camera, noisy.astype(np.uint8)) == pytest.approx(expected, rel=1e-12)


def test_weights_and_window():
    assert sum(image_quality.MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)
    taps = image_quality.gaussian_window()
    assert taps.shape == (11,) and taps.sum() == pytest.approx(1.0)
    assert taps[5] / taps[6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_ms_ssim_refuses_small_images():
    small = np.zeros((175, 300, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 176 pixels"):
        ms_ssim(small, small)
    ms_ssim(np.zeros((176, 176), np.uint8), np.zeros((176, 176), np.uint8))  # the minimum works


@pytest.mark.parametrize("function", [psnr, ssim, ms_ssim])
def test_bad_inputs(function):
    image = np.zeros((180, 180, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        function(image.astype(np.float32), image)
    with pytest.raises(ValueError, match="same shape"):
        function(image, image[:, :-1])
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        function(image[None], image[None])


def test_ms_ssim_db():
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
    assert ms_ssim_db(0.999) == pytest.approx(30.0)
    assert ms_ssim_db(1.0) == math.inf
