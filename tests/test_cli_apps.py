"""Every app subcommand end to end on a tiny trained model: files written, numbers reported."""

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from vae_jax import cli

TINY_PHOTOS = dict(crop_size=16, widths="8,16", latent_channels=2, mixture_components=2, batch_size=8,
                   steps_per_dispatch=5, eval_every=0, checkpoint_every=0, grid_size=2)  # fmt: skip


def _sets(values):
    return [x for key, value in values.items() for x in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert (
        cli.main(["train", "--run-dir", str(run_dir), "--steps", "5", "--no-progress", *_sets(TINY_PHOTOS)])
        == 0
    )
    return run_dir


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 27, 3), dtype=np.uint8)).save(path)
    return path


def test_sample_and_interpolate(photo_run, tmp_path):
    assert (
        cli.main(
            [
                "sample",
                "--run",
                str(photo_run),
                "--num",
                "4",
                "--temperature",
                "0.5,1",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (tmp_path / "samples_t0.5.png").is_file() and (tmp_path / "sample.json").is_file()
    assert (
        cli.main(["interpolate", str(photo_run), "--pairs", "1", "--steps", "4", "--out-dir", str(tmp_path)])
        == 0
    )
    report = json.loads((tmp_path / "interpolate.json").read_text())
    assert len(report["interpolation_latent_norms"]["slerp"]) == 4


def test_denoise_and_inpaint(photo_run, photo_file, tmp_path):
    common = ["--run", str(photo_run), "--steps", "3", "--iterations", "2", "--out-dir", str(tmp_path)]
    assert cli.main(["denoise", str(photo_file), *common]) == 0
    denoised = json.loads((tmp_path / "denoise.json").read_text())
    assert set(denoised["denoise"]) == {"noisy", "gaussian_blur", "posterior_mean", "map"}
    assert cli.main(["inpaint", str(photo_file), *common]) == 0
    inpainted = json.loads((tmp_path / "inpaint.json").read_text())
    assert {"inpaint_centre", "inpaint_random"} <= set(inpainted)
    assert (tmp_path / "inpaint_centre.png").is_file()


def test_compress_decompress_round_trip_and_wrong_model(photo_run, photo_file, tmp_path, capsys):
    packed, unpacked = tmp_path / "photo.vae", tmp_path / "back.png"
    assert cli.main(["compress", str(photo_file), "-o", str(packed), "--run", str(photo_run)]) == 0
    assert json.loads((tmp_path / "photo.vae.json").read_text())["round_trip_exact"] is True
    assert cli.main(["decompress", str(packed), "-o", str(unpacked), "--run", str(photo_run)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(unpacked)), np.asarray(Image.open(photo_file)))
    # Another model's params: refused with an error, no output written.
    other = tmp_path / "other"
    settings = dict(TINY_PHOTOS, seed=1)
    assert (
        cli.main(["train", "--run-dir", str(other), "--steps", "5", "--no-progress", *_sets(settings)]) == 0
    )
    capsys.readouterr()
    assert cli.main(["decompress", str(packed), "-o", str(tmp_path / "bad.png"), "--run", str(other)]) == 2
    assert "model" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_probe_on_labelled_idx_data(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, count in (("train", 64), ("t10k", 32)):
        labels = rng.integers(0, 2, count)
        # Two classes that differ in brightness: any sensible feature separates them.
        images = np.where(labels[:, None, None] == 1, 200, 40) + rng.integers(0, 40, (count, 8, 8))
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    run_dir = tmp_path / "run"
    settings = dict(data=f"idx:{tmp_path}", model="mlp", likelihood="bernoulli", hidden="16", latent_dim=2,
                    batch_size=16, steps_per_dispatch=5, eval_every=0, checkpoint_every=0, grid_size=2)  # fmt: skip
    assert (
        cli.main(["train", "--run-dir", str(run_dir), "--steps", "10", "--no-progress", *_sets(settings)])
        == 0
    )
    assert (
        cli.main(
            ["probe", "--run", str(run_dir), "--probe-steps", "50", "--out-dir", str(tmp_path / "probe")]
        )
        == 0
    )
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["pixels"]["probe"]["test_accuracy"] > 0.9  # the raw-pixel probe sees the brightness
    assert (tmp_path / "probe" / "latent_scatter.png").is_file()  # a 2-D latent gets its scatter plot
    assert "linear probe" in capsys.readouterr().out
