"""Bits-back ANS: exact round trips, refusals of wrong/damaged files, rate near -ELBO."""

import jax
import numpy as np
import pytest
import skimage.data

import vae_jax
from vae_jax.apps import compression


@pytest.fixture(scope="module")
def conv_mixture():
    """Mixture likelihood and a mixture prior: exercises the nested bits back over components."""
    model = vae_jax.conv_vae(
        (8, 8, 3), widths=(8, 16), blocks_per_stage=1, latent_channels=2,
        likelihood=vae_jax.DiscretizedLogisticMixture(2), prior=vae_jax.MixtureOfGaussians(3),
    )  # fmt: skip
    return model, vae_jax.init(model, jax.random.key(1))


@pytest.fixture(scope="module")
def conv_coupled():
    """The channel-coupled mixture: coded R, then G given R, then B given R and G. Perturbed
    parameters, so that the coupling coefficients are not zero and the conditionals really differ."""
    from conftest import perturbed

    model = vae_jax.conv_vae(
        (8, 8, 3), widths=(8, 16), blocks_per_stage=1, latent_channels=2,
        likelihood=vae_jax.CoupledLogisticMixture(2),
    )  # fmt: skip
    return model, perturbed(vae_jax.init(model, jax.random.key(2)), 5)


def _random_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(8, 8, 3), (5, 13, 3), (17, 9, 3), (1, 1, 3), (16, 24, 3)])
def test_round_trip_random_images(discrete_mlp, shape):
    model, params = discrete_mlp
    image = _random_image(shape, seed=sum(shape))
    blob = compression.compress_image(model, params, image, seed=3)
    decoded = compression.decompress_image(model, params, blob)
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("which", ["conv_mixture", "conv_coupled"])
def test_round_trip_photo_and_exact_bytes(which, request):
    model, params = request.getfixturevalue(which)
    image = skimage.data.chelsea()[:24, :40]
    blob = compression.compress_image(model, params, image)
    decoded = compression.decompress_image(model, params, blob)
    np.testing.assert_array_equal(decoded, image)
    # Coding is deterministic: the decoded image codes to the very same bytes.
    assert compression.compress_image(model, params, decoded) == blob


def test_round_trip_grayscale_2d_image():
    model = vae_jax.mlp_vae((4, 4, 1), hidden=(8,), latent_dim=2, likelihood=vae_jax.DiscretizedLogisticMixture(2))
    params = vae_jax.init(model, jax.random.key(2))
    image = _random_image((7, 6), seed=1)
    decoded = compression.decompress_image(model, params, compression.compress_image(model, params, image))
    np.testing.assert_array_equal(decoded[..., 0], image)


def test_seeds_change_bytes_not_content(discrete_mlp):
    model, params = discrete_mlp
    image = _random_image((8, 16, 3))
    blobs = [compression.compress_image(model, params, image, seed=s) for s in (0, 1)]
    assert blobs[0] != blobs[1]
    for blob in blobs:
        np.testing.assert_array_equal(compression.decompress_image(model, params, blob), image)


def test_wrong_model_is_refused(discrete_mlp):
    model, params = discrete_mlp
    blob = compression.compress_image(model, params, _random_image((8, 8, 3)))
    other = vae_jax.init(model, jax.random.key(99))
    with pytest.raises(compression.CompressionError, match="different model"):
        compression.decompress_image(model, other, blob)


def test_truncated_and_corrupted_files_raise(discrete_mlp):
    model, params = discrete_mlp
    blob = compression.compress_image(model, params, _random_image((9, 9, 3)))
    for cut in (0, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(compression.CompressionError):
            compression.decompress_image(model, params, blob[:cut])
    for position in (0, 9, 20, len(blob) // 2, len(blob) - 6, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[position] ^= 0x10
        with pytest.raises(compression.CompressionError):
            compression.decompress_image(model, params, bytes(damaged))


def test_non_discrete_likelihood_is_refused():
    model = vae_jax.mlp_vae((8, 8, 3), hidden=(8,), latent_dim=2, likelihood=vae_jax.Gaussian(0.1))
    params = vae_jax.init(model, jax.random.key(0))
    with pytest.raises(ValueError, match="discrete likelihood"):
        compression.compress_image(model, params, _random_image((8, 8, 3)))


def test_bad_image_is_refused(discrete_mlp):
    model, params = discrete_mlp
    with pytest.raises(ValueError, match="uint8"):
        compression.compress_image(model, params, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="expected an"):
        compression.compress_image(model, params, np.zeros((8, 8, 3, 1), np.uint8))


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (2, "LA"), (4, "RGBA"), (2, "I;16"), (7, "")])
def test_any_channel_count_round_trips_in_planes_and_keeps_its_mode(discrete_mlp, channels, mode):
    """Grey, grey+alpha, RGBA and the two bytes of 16-bit grey, on a colour model: coded in planes
    of three channels (the last completed by repeating its last channel), decoded exactly."""
    model, params = discrete_mlp
    image = _random_image((9, 11, channels), seed=channels)
    blob = compression.compress_image(model, params, image, mode=mode)
    assert compression.read_header(blob)["mode"] == mode
    np.testing.assert_array_equal(compression.decompress_image(model, params, blob), image)
    planes = compression.split_planes(image, 3)
    assert len(planes) == -(-channels // 3)
    np.testing.assert_array_equal(compression.join_planes(planes, channels), image)


def test_compressing_codes_once_and_verifies_by_decoding_once(discrete_mlp, monkeypatch, tmp_path):
    model, params = discrete_mlp
    image = _random_image((17, 9, 4))
    calls = {"push_tile": 0, "pop_tile": 0}
    for name in calls:
        real = getattr(compression._Coder, name)

        def counted(self, *args, _real=real, _name=name):
            calls[_name] += 1
            return _real(self, *args)

        monkeypatch.setattr(compression._Coder, name, counted)
    ticks = []
    report = compression.run_compression(model, params, image, out_path=tmp_path / "x.vae", progress=ticks.append)
    tiles = compression.num_tiles(model, image.shape)
    assert tiles == 3 * 2 * 2 and calls == {"push_tile": tiles, "pop_tile": tiles}
    assert len(ticks) == 2 * tiles and report["round_trip_exact"]


def test_run_compression_never_replaces_a_file_unasked(discrete_mlp, tmp_path):
    model, params = discrete_mlp
    out = tmp_path / "image.vae"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        compression.run_compression(model, params, _random_image((8, 8, 3)), out_path=out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(ValueError, match="is a directory"):
        compression.run_compression(model, params, _random_image((8, 8, 3)), out_path=tmp_path)
    compression.run_compression(model, params, _random_image((8, 8, 3)), out_path=out, force=True)
    assert out.read_bytes()[:8] == compression.MAGIC


def test_model_hash_tracks_params(discrete_mlp):
    model, params = discrete_mlp
    assert compression.model_hash(model, params) == compression.model_hash(
        model, jax.tree.map(np.array, params)
    )
    nudged = jax.tree.map(lambda a: a, params)
    nudged["decoder"]["out"]["bias"] = nudged["decoder"]["out"]["bias"].at[0].add(1e-7)
    assert compression.model_hash(model, params) != compression.model_hash(model, nudged)


def test_initial_words_deterministic():
    a, b = compression.initial_words(5, 37), compression.initial_words(5, 37)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint32 and a[-1] % 2 == 1
    assert not np.array_equal(a, compression.initial_words(6, 37))


@pytest.mark.parametrize(
    ("which", "size"), [("discrete_mlp", 64), ("conv_mixture", 64), ("discrete_mlp", 60), ("conv_coupled", 60)]
)
def test_rate_is_close_to_negative_elbo(which, size, request):
    model, params = request.getfixturevalue(which)
    # 64: whole tiles. 60: the border tiles are 4/8 padding, which must not be coded (were it
    # coded, the rate would exceed the ELBO of the image pixels by ~14%).
    image = skimage.data.chelsea()[100 : 100 + size, 200 : 200 + size]
    _, report = compression.compression_report(model, params, image, elbo_samples=16)
    assert report["round_trip_exact"]
    # Untrained tiny models: both rates are ~9 bits/dim; measured within ~1% of each other.
    assert report["net_bits_per_dim"] == pytest.approx(report["neg_elbo_bits_per_dim"], rel=0.03)
    assert report["bits_per_dim"] > report["net_bits_per_dim"]  # header + initial bits
    assert report["initial_bits_overhead"] >= 0
    assert 0 < report["png_bits_per_dim"] and 0 < report["webp_bits_per_dim"]


def test_run_compression_writes_file(discrete_mlp, tmp_path):
    model, params = discrete_mlp
    out = tmp_path / "image.vbb"
    report = compression.run_compression(model, params, _random_image((10, 10, 3)), out_path=out)
    assert out.read_bytes()[:8] == compression.MAGIC and report["file_bytes"] == out.stat().st_size
