"""The vae-jax command end to end on tiny runs: train, evaluate and every app subcommand (files
written, numbers reported), and clear errors, before any work, for bad flags and files."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONV_RUN
from PIL import Image

from vae_jax import cli

TINY_PHOTOS = {key: value for key, value in TINY_CONV_RUN.items() if key not in ("steps", "log_every")}


def _sets(values):
    return [
        x
        for key, value in {"eval_every": 0, "checkpoint_every": 0, **values}.items()
        for x in ("--set", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}")
    ]


def _cli(*args):
    return cli.main([str(a) for a in args])


def test_train_evaluate_sample_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = _sets(dict(TINY_PHOTOS, eval_every=10))
    assert _cli("train", "--run-dir", run_dir, "--steps", 10, "--no-progress", *sets) == 0
    assert _cli("evaluate", run_dir, "--k", 4, "--limit", 8) == 0
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["iwae"]["k"] == 4 and report["elbo"]["num_images"] == 8
    assert report["iwae"]["nll_nats"] <= -report["elbo"]["elbo"] + 50  # IWAE-k NLL is near or below -ELBO
    assert _cli("sample", "--run", run_dir, "--num", 4, "--out-dir", tmp_path / "samples") == 0
    sample_report = json.loads((tmp_path / "samples" / "sample.json").read_text())
    assert sample_report["files"] and all(Path(f).is_file() for f in sample_report["files"])
    # An existing run is never overwritten.
    before = sorted(p.name for p in run_dir.iterdir())
    assert _cli("train", "--run-dir", run_dir, "--steps", 10, "--no-progress") == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--set", "not_a_key=1"], "unknown config key"),
        (["train", "--set", "steps=abc"], "expected a value of type"),
        (["train", "--data", "tfds:surely_not_a_dataset"], "surely_not_a_dataset"),
        (["train", "--data", "folder:/no/such/folder"], "/no/such/folder"),
        (["evaluate", "/no/such/run"], "not a run directory"),
    ],
)
def test_bad_input_gives_a_clear_error(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(*args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_list_of_config_keys_shows_field_names_and_a_field_named_alone_its_flag(tmp_path, capsys, monkeypatch):
    """Issue 27: the keys --set takes were listed with --data-dir in place of data_dir."""
    monkeypatch.chdir(tmp_path)
    assert _cli("train", "--set", "not_a_key=1") == 2
    error = capsys.readouterr().err
    known = error.split("known keys: ")[1].strip().split(", ")
    assert "data_dir" in known and "manual_dir" in known and "download" in known
    assert "--data-dir" not in error
    tfds_hint = "point data_dir at a directory where it is prepared, or download=True; not metadata_dir"
    assert cli._with_flags(tfds_hint) == "point --data-dir at a directory where it is prepared, or --download; not metadata_dir"


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


def _sixteen_bit_and_rgba_files(directory):
    values = (np.arange(20 * 27).reshape(20, 27) * 97 % 65536).astype(np.uint16)
    Image.fromarray(values).save(directory / "grey16.png")
    rgba = np.random.default_rng(1).integers(0, 256, (20, 27, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(directory / "rgba.png")
    Image.fromarray(rgba[..., 0], "L").save(directory / "grey.png")
    return ("grey16.png", "I;16"), ("rgba.png", "RGBA"), ("grey.png", "L")


def test_compress_keeps_every_mode_and_depth_and_never_overwrites(photo_run, tmp_path, capsys):
    from vae_jax import images

    for name, mode in _sixteen_bit_and_rgba_files(tmp_path):
        original = tmp_path / name
        packed = tmp_path / f"{original.stem}.vae"
        assert cli.main(["compress", str(original), "--run", str(photo_run), "--no-progress"]) == 0
        assert packed.is_file()
        capsys.readouterr()
        # The default output is the source image's own name: refused, the original untouched.
        before = original.read_bytes()
        assert cli.main(["decompress", str(packed), "--run", str(photo_run), "--no-progress"]) == 2
        assert "already exists" in capsys.readouterr().err and original.read_bytes() == before
        back = tmp_path / f"{original.stem}_back.png"
        assert cli.main(["decompress", str(packed), "-o", str(back), "--run", str(photo_run), "--no-progress"]) == 0
        (want, want_mode), (got, got_mode) = images.read_exact(original), images.read_exact(back)
        assert got_mode == want_mode == mode
        np.testing.assert_array_equal(got, want)
        # Compressing again onto the existing .vae needs --force.
        assert cli.main(["compress", str(original), "--run", str(photo_run), "--no-progress"]) == 2
        assert "already exists" in capsys.readouterr().err
    assert cli.main(["compress", str(original), "-o", str(tmp_path), "--run", str(photo_run)]) == 2
    assert "is a directory" in capsys.readouterr().err
    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    assert cli.main(["compress", str(tmp_path / "palette.png"), "--run", str(photo_run)]) == 2
    assert "cannot be coded exactly" in capsys.readouterr().err
    assert not (tmp_path / "palette.vae").exists()


def test_resume_flags_must_agree_with_the_saved_run(photo_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(photo_run, run)
    for flags, field in ((["--set", "learning_rate=0.1"], "learning_rate"), (["--batch-size", "4"], "batch_size"),
                         (["--seed", "7"], "seed"), (["--data", "folder:/tmp"], "data")):  # fmt: skip
        assert cli.main(["train", "--resume", "--run-dir", str(run), "--no-progress", *flags]) == 2
        assert f"{field} " in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--run-dir", str(run), "--steps", "3", "--no-progress"]) == 2
    assert "already at step 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "RUN", "--batch-size", "-1"], "--batch-size: expected an integer >= 1, got -1"),
        (["evaluate", "RUN", "--k", "-5"], "--k: expected an integer >= 0, got -5"),
        (["evaluate", "RUN", "--limit", "-120"], "--limit: expected an integer >= 0, got -120"),
        (["train", "--batch-size", "100000", "--run-dir", "NEW"], "--batch-size: batch_size: "),
        (["train", "--set", "steps_per_dispatch=0", "--run-dir", "NEW"], "--set steps_per_dispatch=...: "),
        (["train", "--run-dir", "FILE"], "exists and is not a directory"),
    ],
)
def test_bad_flags_are_refused_before_any_work(photo_run, tmp_path, capsys, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [
        {"RUN": str(photo_run), "NEW": str(tmp_path / "new"), "FILE": str(tmp_path / "FILE")}.get(a, a) for a in args
    ]
    with pytest.raises(SystemExit) if "evaluate" in args else _nothing():
        assert cli.main([*args, "--no-progress"] if args[0] == "train" else args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_corrupt_config_is_named(photo_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(photo_run, run)
    (run / "config.json").write_text("{not json")
    assert cli.main(["evaluate", str(run)]) == 2
    assert f"{run / 'config.json'}: not a valid config file" in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_evaluate_a_folder_scores_every_tile_of_every_photo_next_to_the_codecs(photo_run, tmp_path):
    from vae_jax.data.crops import tiles
    from vae_jax.photo_eval import codec_bits_per_dim

    rng = np.random.default_rng(1)
    photos = {"a.png": rng.integers(0, 256, (40, 70, 3), dtype=np.uint8), "b.png": np.full((33, 50, 3), 90, np.uint8)}
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(tmp_path / name)
    out = tmp_path / "eval.json"
    assert _cli("evaluate", photo_run, "--data", f"folder:{tmp_path}", "--k", 0, "--output", out, "--no-progress") == 0
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["photos"]}
    assert rows["a.png"]["tiles"] == 2 * 4 and rows["b.png"]["tiles"] == 2 * 3  # 16x16 tiles, margins left out
    assert report["overall"]["tiles"] == 14
    codecs = codec_bits_per_dim(tiles(photos["a.png"], 16))
    assert rows["a.png"]["png_bits_per_dim"] == pytest.approx(codecs["png"])
    assert rows["a.png"]["webp_bits_per_dim"] == pytest.approx(codecs["webp"])
    assert rows["b.png"]["elbo_bits_per_dim"] < rows["a.png"]["elbo_bits_per_dim"]  # flat grey vs noise
    assert _cli("evaluate", photo_run, "--data", f"folder:{tmp_path}", "--k", 0, "--max-tiles", 3,
                "--output", out, "--no-progress") == 0  # fmt: skip
    assert [row["tiles"] for row in json.loads(out.read_text())["photos"]] == [3, 3]


def test_apps_use_the_shipped_model_without_a_run(photo_run, photo_file, tmp_path, capsys, monkeypatch):
    from vae_jax import pretrained

    if not pretrained.available():
        pytest.skip("no model shipped in this checkout")
    monkeypatch.chdir(tmp_path)
    packed, back = tmp_path / "photo.vae", tmp_path / "back.png"
    assert cli.main(["compress", str(photo_file), "-o", str(packed), "--no-progress"]) == 0
    assert "using the shipped model 'photos'" in capsys.readouterr().err
    assert cli.main(["decompress", str(packed), "-o", str(back), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(back)), np.asarray(Image.open(photo_file)))
    # The file names the model that coded it: another model refuses it, never a wrong image.
    assert cli.main(["decompress", str(packed), "-o", str(tmp_path / "x.png"), "--run", str(photo_run)]) == 2
    assert "model" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert cli.main(["sample", "--num", "4"]) == 0 and (tmp_path / "samples" / "sample.json").is_file()
    assert cli.main(["denoise", str(photo_file), "--steps", "2", "--iterations", "1"]) == 0
    assert (tmp_path / "denoise" / "denoise.json").is_file()
