"""The lossy codec's files: tables, exact round trips to the encoder's reconstruction at any size,
the file against the model's rate, and refusals before anything is written."""

from __future__ import annotations

import json
import math
import zlib

import jax
import numpy as np
import pytest
from scipy import stats

from vae_jax import entropy_models, rate_distortion
from vae_jax.apps import lossy


@pytest.fixture(scope="module")
def codec():
    model = rate_distortion.HyperpriorCodec((64, 64, 3), width=16, latent_channels=12)
    return lossy.make_codec(model, jax.jit(model.init)(jax.random.key(0)), "test-codec")


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.chelsea()[40:140, 100:230]


def test_gaussian_tables_are_normal_masses_with_the_tails_in_the_edge_bins():
    for scale in (0.11, 1.7, 30.0):
        table = lossy.gaussian_table(scale)
        half = (len(table) - 1) // 2
        assert half == max(math.ceil(8 * scale), lossy.MIN_HALF_RANGE)
        q = np.arange(-half + 1, half)
        np.testing.assert_allclose(table[1:-1], stats.norm.cdf(q + 0.5, 0, scale) - stats.norm.cdf(q - 0.5, 0, scale),
                                   rtol=1e-9, atol=1e-300)  # fmt: skip
        np.testing.assert_allclose(table[0], stats.norm.cdf(-half + 0.5, 0, scale), rtol=1e-6, atol=1e-300)
        assert math.isclose(table.sum(), 1.0, rel_tol=1e-12)
    levels = lossy.scale_table()
    assert len(levels) == lossy.SCALE_LEVELS and math.isclose(levels[0], 0.11) and math.isclose(levels[-1], 256.0)


def test_hyper_tables_are_the_factorized_masses_and_cover_the_density(codec):
    params64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), codec.params["hyper_density"])
    for c, table in enumerate(codec.hyper_tables):
        half = (len(table) - 1) // 2
        inner = np.arange(-half + 1, half, dtype=np.float64)
        points = np.zeros((inner.size, len(codec.hyper_tables)))
        points[:, c] = inner
        expected = entropy_models.factorized_bin_mass(params64, points, xp=np)[:, c]
        kept = expected > 2 * entropy_models.MIN_MASS  # the model's masses are floored, the tables not
        np.testing.assert_allclose(table[1:-1][kept], expected[kept], rtol=1e-6)
        assert table[0] < 1e-8 and table[-1] < 1e-8 and math.isclose(table.sum(), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 3), (100, 130, 3), (65, 3, 3), (64, 64), (37, 90, 1)])
def test_files_decode_to_the_encoders_reconstruction_at_any_size(codec, shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
    blob, reconstruction = lossy.compress(codec, pixels)
    assert reconstruction.shape == (shape[:2] if len(shape) == 2 or shape[-1] == 1 else shape)
    assert reconstruction.dtype == np.uint8
    assert np.array_equal(lossy.decompress(blob, codec), reconstruction)
    assert lossy.read_header(blob)["mode"] == ("RGB" if len(shape) == 3 and shape[-1] == 3 else "L")


def test_the_reconstruction_is_the_synthesis_of_the_coded_latents(codec, photo):
    _, reconstruction = lossy.compress(codec, photo)
    _, q, mean, _ = lossy.encode_latents(codec, photo)
    expected = codec.model.synthesis(codec.params, q + mean)[0, :100, :130]
    np.testing.assert_array_equal(reconstruction, np.round(np.clip(np.asarray(expected), 0, 1) * 255).astype(np.uint8))


def test_the_payload_is_the_models_rate(codec, photo):
    blob, _ = lossy.compress(codec, photo)
    estimate = lossy.estimated_bits(codec, photo)
    # An untrained model: its tables' scale levels and the ANS coder's last word are the difference.
    assert abs(lossy.payload_bits(blob) - estimate) <= 0.03 * estimate + 64


def test_what_the_codec_cannot_code_is_refused(codec):
    with pytest.raises(lossy.LossyCodecError, match="alpha"):
        lossy.compress(codec, np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(lossy.LossyCodecError, match="16-bit"):
        lossy.compress(codec, np.zeros((8, 8), np.uint16))
    with pytest.raises(lossy.LossyCodecError, match="shape"):
        lossy.compress(codec, np.zeros((8,), np.uint8))
    with pytest.raises(lossy.LossyCodecError, match="rate-distortion model"):
        lossy.make_codec(object(), {}, "x")


def test_damaged_foreign_and_other_models_files_are_errors_never_images(codec, photo):
    blob, reconstruction = lossy.compress(codec, photo)
    with pytest.raises(lossy.LossyCodecError, match="CRC"):
        lossy.decompress(blob[:50] + bytes([blob[50] ^ 1]) + blob[51:], codec)
    with pytest.raises(lossy.LossyCodecError, match="truncated|CRC"):
        lossy.decompress(blob[:-9], codec)
    with pytest.raises(lossy.LossyCodecError, match="not a vae-jax lossy file"):
        lossy.decompress(b"VAEBBANS" + blob[8:], codec)
    older = blob[:8] + bytes([lossy.VERSION - 1]) + blob[9:-4]
    with pytest.raises(lossy.LossyCodecError, match=f"version {lossy.VERSION - 1}"):
        lossy.decompress(older + zlib.crc32(older).to_bytes(4, "little"), codec)
    other_model = rate_distortion.HyperpriorCodec((64, 64, 3), width=16, latent_channels=12)
    other = lossy.make_codec(other_model, jax.jit(other_model.init)(jax.random.key(9)), "other")
    with pytest.raises(lossy.LossyCodecError, match="another model"):
        lossy.decompress(blob, other)
    # Words changed and the CRC made to match: an error, or the same image, never another one.
    import struct

    body = bytearray(blob[:-4])
    for offset in range(lossy._HEADER.size, len(body), max(1, (len(body) - lossy._HEADER.size) // 7)):
        edited = bytearray(body)
        edited[offset] ^= 0x5A
        edited = bytes(edited) + struct.pack("<I", zlib.crc32(bytes(edited)))
        try:
            decoded = lossy.decompress(edited, codec)
        except lossy.LossyCodecError:
            continue
        assert np.array_equal(decoded, reconstruction)


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory):
    from vae_jax import config as config_lib
    from vae_jax import runs

    overrides = dict(widths=(16,), latent_channels=12, batch_size=4, steps=5, log_every=5, eval_every=5,
                     checkpoint_every=5, eval_batch_size=8, steps_per_dispatch=5)  # fmt: skip
    run_dir = tmp_path_factory.mktemp("lossy") / "rd"
    runs.train(config_lib.preset("photos-rd-base", overrides), run_dir, progress=False, log=lambda *a: None)
    return run_dir


def test_a_hyperprior_run_trains_evaluates_and_loads(codec_run):
    from vae_jax import trained

    test = json.loads((codec_run / "summary.json").read_text())["test"]
    assert test["bits_per_pixel"] > 0 and np.isfinite(test["psnr"])
    np.testing.assert_allclose(test["loss"], test["bits_per_pixel"] + 0.0067 * test["mse"], rtol=1e-9)
    assert (codec_run / "reconstructions_latest.png").is_file() and (codec_run / "curves.png").is_file()
    records = [json.loads(line) for line in (codec_run / "metrics.jsonl").read_text().splitlines()]
    assert {"bits_per_pixel", "psnr", "mse"} <= set(records[0])
    loaded = trained.load(str(codec_run))
    assert isinstance(loaded.model, rate_distortion.HyperpriorCodec) and loaded.step == 5


def test_cli_codes_lossy_files_and_decompress_reads_them(codec_run, tmp_path, capsys):
    from PIL import Image
    from skimage import data

    from vae_jax import cli

    Image.fromarray(data.chelsea()[:90, :140]).save(tmp_path / "colour.png")
    Image.fromarray(data.camera()[:70, :50]).save(tmp_path / "grey.png")
    arguments = ["compress", str(tmp_path / "colour.png"), str(tmp_path / "grey.png"), "-o", str(tmp_path / "coded"),
                 "--run", str(codec_run), "--no-progress"]  # fmt: skip
    assert cli.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "bits/pixel" in printed and "PSNR" in printed and "lossy" in printed
    codec = lossy.load_codec(str(codec_run))
    for name, mode in (("colour", "RGB"), ("grey", "L")):
        blob = (tmp_path / "coded" / f"{name}.vae").read_bytes()
        _, expected = lossy.compress(codec, np.asarray(Image.open(tmp_path / f"{name}.png")))
        out = tmp_path / f"{name}-back.png"
        assert cli.main(["decompress", str(tmp_path / "coded" / f"{name}.vae"), "-o", str(out), "--run", str(codec_run)]) == 0
        with Image.open(out) as back:
            assert back.mode == mode and np.array_equal(np.asarray(back), expected)
        assert lossy.read_header(blob)["mode"] == mode
    # What the lossy codec cannot code is refused before any file is written.
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "alpha.png")
    assert cli.main(["compress", str(tmp_path / "alpha.png"), "-o", str(tmp_path / "alpha.vae"), "--run", str(codec_run)]) != 0
    assert "not RGBA" in capsys.readouterr().err and not (tmp_path / "alpha.vae").exists()
    assert cli.main(["compress", str(tmp_path / "colour.png"), "--quality", "99", "-o", str(tmp_path / "q.vae")]) != 0
    assert "no shipped lossy codec 'photos-rd-q99'" in capsys.readouterr().err


@pytest.mark.skipif("photos-rd-q3" not in lossy.shipped_qualities(), reason="no lossy codec shipped in this checkout")
def test_the_shipped_codec_codes_and_decodes_with_no_run(tmp_path):
    from PIL import Image
    from skimage import data

    from vae_jax import cli

    pixels = data.chelsea()[:120, :200]
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert cli.main(["compress", str(tmp_path / "photo.png"), "--quality", "3", "--no-progress"]) == 0
    assert cli.main(["decompress", str(tmp_path / "photo.vae"), "-o", str(tmp_path / "back.png")]) == 0
    _, expected = lossy.compress(lossy.load_codec("photos-rd-q3"), pixels)
    with Image.open(tmp_path / "back.png") as back:
        assert np.array_equal(np.asarray(back), expected)
    assert lossy.psnr(pixels, expected) > 24  # a trained codec, not noise
