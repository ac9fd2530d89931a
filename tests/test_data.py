"""Tests of vae_jax.data: sources (photos, TFDS via mock_data, folder, idx) and transforms."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.data import (
    ArraySource,
    DatasetNotFoundError,
    DataSourceError,
    IdxFormatError,
    dequantize,
    dynamic_binarize,
    load_source,
    prepare,
    static_binarize,
    to_discrete,
    to_unit_interval,
)
from vae_jax.data.channels import luma
from vae_jax.data.folder import held_out_file_indices
from vae_jax.data.idx import read_idx
from vae_jax.data.photos import TRAIN_PHOTOS, load_photos

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    """Write ``array`` as an idx file (gzipped when ``path`` ends in .gz), independently of the reader."""
    dtypes = {0x08: ">u1", 0x0C: ">i4"}
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(dtypes[type_code]).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_idx_dataset(directory: Path, train: np.ndarray, test: np.ndarray, gz: bool) -> Path:
    """The four MNIST-named idx files; labels are the image index mod 10."""
    suffix = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, images in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(len(images)) % 10)
    return directory


def constant_images(num: int, height: int = 4, width: int = 5) -> np.ndarray:
    """Image ``i`` is filled with the value ``i``, so a batch tells which examples it holds."""
    return np.broadcast_to(np.arange(num, dtype=np.uint8)[:, None, None], (num, height, width)).copy()


def example_ids(batch: np.ndarray) -> np.ndarray:
    return batch[..., 0, 0, 0].astype(np.int64)


@pytest.fixture(scope="module")
def photos32():
    return load_source("photos", crop_size=32)


@pytest.fixture
def small_idx_source(tmp_path):
    """50 training and 7 test examples, image ``i`` filled with ``i``."""
    directory = write_idx_dataset(tmp_path / "idx", constant_images(50), constant_images(7), gz=False)
    return load_source(f"idx:{directory}")


# ----------------------------------------------------------------------------- photos


@pytest.mark.parametrize(
    "crop_size, num_train, num_test",
    # Tiles per photo: (H // s) * (W // s); the training photos are astronaut 512x512,
    # coffee 400x600, rocket 427x640, motorcycle 500x741 (twice), china and flower 427x640,
    # retina 706x706 (halved), ihc 512x512.
    [
        (16, 32 * 32 + 25 * 37 + 26 * 40 + 2 * 31 * 46 + 2 * 26 * 40 + 44 * 44 + 32 * 32, 18 * 28),
        (32, 2682, 9 * 14),
        (64, 8 * 8 + 6 * 9 + 6 * 10 + 2 * 7 * 11 + 2 * 6 * 10 + 11 * 11 + 8 * 8, 4 * 7),
    ],
)
def test_photos_shapes_and_counts(crop_size, num_train, num_test):
    source = load_source("photos", crop_size=crop_size)
    assert source.image_shape == (crop_size, crop_size, 3)
    assert source.num_train == num_train
    batch = source.train_batch(0, 8, seed=0)
    assert batch.shape == (8, crop_size, crop_size, 3) and batch.dtype == np.uint8
    test = source.test_images()
    assert test.shape == (num_test, crop_size, crop_size, 3) and test.dtype == np.uint8
    assert source.test_labels() is None


def test_photos_test_tiles_are_chelsea_slices(photos32):
    chelsea = load_photos()["chelsea"]
    test = photos32.test_images()
    assert test.shape == (126, 32, 32, 3)
    for k in range(126):
        row, col = divmod(k, 14)
        np.testing.assert_array_equal(test[k], chelsea[32 * row : 32 * row + 32, 32 * col : 32 * col + 32])


def test_photos_determinism(photos32):
    a = photos32.train_batch(7, 16, seed=3)
    np.testing.assert_array_equal(a, photos32.train_batch(7, 16, seed=3))
    assert not np.array_equal(a, photos32.train_batch(8, 16, seed=3))
    assert not np.array_equal(a, photos32.train_batch(7, 16, seed=4))
    np.testing.assert_array_equal(load_source("photos").train_batch(7, 16, seed=3), a)  # a fresh source too


def test_photos_crops_follow_the_epoch_plan(photos32):
    """Batches of an epoch are, in order, the crops its plan places, mirrored where it says."""
    seed, batch_size = 5, 64
    steps = photos32.steps_per_epoch(batch_size)
    assert steps == 2682 // 64
    photos = load_photos()
    plan = photos32.crop_plan(seed, epoch=1)
    # Each photo gives exactly its tile count of crops per epoch.
    tiles_per_photo = [(photos[n].shape[0] // 32) * (photos[n].shape[1] // 32) for n in TRAIN_PHOTOS]
    np.testing.assert_array_equal(np.bincount(plan.image, minlength=len(TRAIN_PHOTOS)), tiles_per_photo)
    assert 0.4 < plan.flip.mean() < 0.6
    batch = photos32.train_batch(steps + 2, batch_size, seed)  # third batch of epoch 1
    for j, k in enumerate(range(2 * batch_size, 3 * batch_size)):
        photo = photos[TRAIN_PHOTOS[plan.image[k]]]
        crop = photo[plan.top[k] : plan.top[k] + 32, plan.left[k] : plan.left[k] + 32]
        np.testing.assert_array_equal(batch[j], crop[:, ::-1] if plan.flip[k] else crop)
    assert not np.array_equal(plan.top, photos32.crop_plan(seed, epoch=2).top)


def test_photos_train_tiles_and_gray(photos32):
    images, labels = photos32.train_images_and_labels()
    assert images.shape == (2682, 32, 32, 3) and labels is None
    np.testing.assert_array_equal(images[0], load_photos()["astronaut"][:32, :32])
    gray = load_source("photos", channels=1)
    assert gray.image_shape == (32, 32, 1)
    np.testing.assert_array_equal(gray.train_batch(3, 8, 0), luma(photos32.train_batch(3, 8, 0)))
    with pytest.raises(ValueError, match="crop_size"):
        load_source("photos", crop_size=301)  # chelsea is 300 pixels high


def test_luma_matches_pillow():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(luma(rgb)[..., 0], expected)


# ----------------------------------------------------------------------------- epochs (array sources)


def test_epoch_is_a_permutation_and_drops_the_remainder(small_idx_source):
    source = small_idx_source
    assert isinstance(source, ArraySource) and source.num_train == 50
    assert source.steps_per_epoch(8) == 6  # 48 of 50 examples; 2 dropped
    epoch0 = example_ids(source.train_batches(0, 6, 8, seed=1)).ravel()
    epoch1 = example_ids(source.train_batches(6, 6, 8, seed=1)).ravel()
    for ids in (epoch0, epoch1):
        assert len(np.unique(ids)) == 48 and ids.max() < 50
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(example_ids(source.train_batch(6, 8, seed=1)), epoch1[:8])


def test_without_reshuffling_every_epoch_repeats_the_first(small_idx_source):
    source = small_idx_source
    shuffled = example_ids(source.train_batches(0, 6, 8, seed=1)).ravel()
    fixed = example_ids(source.train_batches(0, 14, 8, seed=1, reshuffle=False)).ravel()
    # The first epoch is the shuffled run's first epoch; the next ones repeat it, remainder dropped.
    np.testing.assert_array_equal(fixed[:48], shuffled)
    np.testing.assert_array_equal(fixed[48:96], shuffled)
    np.testing.assert_array_equal(fixed[96:], shuffled[:16])
    np.testing.assert_array_equal(
        example_ids(source.train_batch(13, 8, seed=1, reshuffle=False)), shuffled[8:16]
    )


def test_train_batches_equal_stacked_train_batch_across_epochs(small_idx_source):
    stacked = small_idx_source.train_batches(4, 5, 8, seed=2)  # steps 4..8 cross into epoch 1
    assert stacked.shape == (5, 8, 4, 5, 1) and stacked.dtype == np.uint8
    for i in range(5):
        np.testing.assert_array_equal(stacked[i], small_idx_source.train_batch(4 + i, 8, seed=2))


def test_batch_arguments_are_checked(small_idx_source):
    with pytest.raises(ValueError, match="batch_size"):
        small_idx_source.train_batch(0, 51, seed=0)
    with pytest.raises(ValueError, match="seed"):
        small_idx_source.train_batch(0, 8, seed=-1)
    with pytest.raises(ValueError, match="step"):
        small_idx_source.train_batch(-1, 8, seed=0)


def test_fixed_arrays_are_read_only(small_idx_source, photos32):
    for array in (
        small_idx_source.test_images(),
        small_idx_source.train_images_and_labels()[0],
        photos32.test_images(),
    ):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    small_idx_source.train_batch(0, 8, seed=0)[0] = 0  # batches are the caller's own copies


# ----------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(12, 6, 7), dtype=np.uint8)
    test = rng.integers(0, 256, size=(3, 6, 7), dtype=np.uint8)
    source = load_source(f"idx:{write_idx_dataset(tmp_path, train, test, gz)}")
    assert source.image_shape == (6, 7, 1)
    images, labels = source.train_images_and_labels()
    np.testing.assert_array_equal(images[..., 0], train)
    np.testing.assert_array_equal(labels, np.arange(12) % 10)
    np.testing.assert_array_equal(source.test_images()[..., 0], test)
    np.testing.assert_array_equal(source.test_labels(), np.arange(3))
    assert load_source(f"idx:{tmp_path}", channels=3).image_shape == (6, 7, 3)


def test_idx_reads_other_type_codes(tmp_path):
    values = np.array([[-5, 70000], [3, -(2**31)]], dtype=np.int32)
    np.testing.assert_array_equal(
        read_idx(write_idx(tmp_path / "x-idx2-int", values, type_code=0x0C)), values
    )


def test_idx_truncated_file_names_file_and_byte_counts(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", constant_images(10))  # 16 + 200 bytes
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte.*expected 216 bytes, received 100"):
        read_idx(path)


def test_idx_truncated_gzip_names_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", constant_images(10))
    path.write_bytes(path.read_bytes()[:-12])  # cut into the deflate stream and its trailer
    with pytest.raises(
        IdxFormatError, match=r"train-images-idx3-ubyte\.gz.*expected 216 bytes, received \d+"
    ):
        read_idx(path)


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx"
    path.write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(IdxFormatError, match=r"bad-idx.*magic"):
        read_idx(path)


def test_idx_missing_files_and_mismatched_labels(tmp_path):
    with pytest.raises(DataSourceError, match="not a directory"):
        load_source(f"idx:{tmp_path / 'nowhere'}")
    write_idx_dataset(tmp_path, constant_images(5), constant_images(2), gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataSourceError, match="t10k-labels-idx1-ubyte"):
        load_source(f"idx:{tmp_path}")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(3))
    with pytest.raises(IdxFormatError, match="expected 2 labels"):
        load_source(f"idx:{tmp_path}")


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    source = load_source(f"idx:{FASHION_MNIST}")
    assert source.num_train == 60000 and source.image_shape == (28, 28, 1)
    assert source.test_images().shape == (10000, 28, 28, 1)
    assert set(np.unique(source.test_labels())) == set(range(10))
    assert source.train_batches(0, 3, 128, seed=0).shape == (3, 128, 28, 28, 1)


# ----------------------------------------------------------------------------- folder


@pytest.fixture
def image_folder(tmp_path):
    """Ten images of assorted sizes and formats, one in a subfolder, plus files to ignore."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [
        (40, 50),
        (20, 30),
        (64, 64),
        (33, 90),
        (32, 32),
        (100, 45),
        (50, 50),
        (70, 40),
        (36, 36),
        (48, 80),
    ]
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        name = f"sub/img{i:02d}.png" if i == 9 else f"img{i:02d}.{'jpg' if i == 3 else 'png'}"
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_crops_and_resizes(image_folder):
    from PIL import Image

    source = load_source(f"folder:{image_folder}", crop_size=32)
    assert source.image_shape == (32, 32, 3)
    files = sorted(p for p in image_folder.rglob("*") if p.suffix != ".txt")
    held_out = held_out_file_indices(len(files))
    assert len(held_out) == 1
    test = source.test_images()
    assert test.shape == (1, 32, 32, 3) and test.dtype == np.uint8
    pixels = np.asarray(Image.open(files[held_out[0]]).convert("RGB"))
    top, left = (pixels.shape[0] - 32) // 2, (pixels.shape[1] - 32) // 2
    np.testing.assert_array_equal(test[0], pixels[top : top + 32, left : left + 32])
    assert files[held_out[0]].name == "img05.png"  # the middle of ten files
    # Tiles of the nine training images (h x w): 40x50: 1, 20x30 enlarged to 32x48: 1, 64x64: 4,
    # 33x90: 2, 32x32: 1, 50x50: 1, 70x40: 2, 36x36: 1, 48x80: 2.
    assert source.num_train == 15
    batch = source.train_batch(0, 4, seed=0)
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8
    assert load_source(f"folder:{image_folder}", crop_size=16, channels=1).train_batch(1, 4, 0).shape == (
        4,
        16,
        16,
        1,
    )


def test_folder_held_out_split():
    assert len(held_out_file_indices(1)) == 0
    np.testing.assert_array_equal(held_out_file_indices(2), [1])
    spread = held_out_file_indices(100)
    assert len(spread) == 10 and len(set(spread)) == 10 and spread.min() < 10 and spread.max() > 90


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(DataSourceError, match="no images.*empty"):
        load_source(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"x\.png"):
        load_source(f"folder:{tmp_path / 'broken'}")


def test_folder_of_one_image_has_an_empty_test_set(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "only.png")
    source = load_source(f"folder:{tmp_path}")
    assert source.num_train == 1 and source.test_images().shape == (0, 32, 32, 3)


def test_folder_of_sixteen_bit_images_is_scaled_not_blank_and_alpha_is_reported_once(tmp_path):
    from PIL import Image

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    for i in range(3):
        Image.fromarray(ramp).save(tmp_path / f"g{i}.png")
    rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="1 of 4 images .* alpha channel; it is dropped") as caught:
        source = load_source(f"folder:{tmp_path}")
    assert len([w for w in caught if "alpha" in str(w.message)]) == 1
    pixels = source.train_images_and_labels()[0]
    assert pixels.min() < 16 and 100 < pixels.mean() < 160  # a ramp, not 255 everywhere
    np.testing.assert_array_equal(
        pixels[0, 0, :4, 0], np.round(ramp[0, :4] / 257).astype(np.uint8)
    )


# ----------------------------------------------------------------------------- TFDS


@pytest.fixture
def mock_tfds():
    """``tfds.testing.mock_data`` with random examples built from the dataset's code.

    It patches ``DatasetBuilder.as_data_source``, so ``tfds.data_source`` returns fake examples
    (deterministic, the same for every split) without TensorFlow; it ignores ``data_dir`` and
    knows no split names (any split name is answered).
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_shapes_and_labels(mock_tfds, name, shape):
    source = load_source(f"tfds:{name}")
    assert source.name == f"tfds:{name}" and source.image_shape == shape and source.num_train == 12
    batch = source.train_batch(0, 4, seed=0)
    assert batch.shape == (4, *shape) and batch.dtype == np.uint8
    test, labels = source.test_images(), source.test_labels()
    assert test.shape == (12, *shape) and test.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (12,) and labels.min() >= 0 and labels.max() < 10
    images, train_labels = source.train_images_and_labels()
    assert images.shape == (12, *shape) and train_labels.shape == (12,)


def test_tfds_binarized_mnist_is_0_or_255(mock_tfds):
    source = load_source("tfds:binarized_mnist")
    assert set(np.unique(source.test_images())) <= {0, 255}
    assert source.test_labels() is None


def test_tfds_lazy_reading_matches_in_memory(mock_tfds):
    from vae_jax.data.tfds_source import LazyArraySource, tfds_source

    eager = tfds_source("cifar10", channels=1)
    lazy = tfds_source("cifar10", channels=1, max_in_memory_bytes=0)
    assert isinstance(lazy, LazyArraySource) and lazy.image_shape == (32, 32, 1)
    np.testing.assert_array_equal(lazy.train_batches(1, 2, 5, seed=3), eager.train_batches(1, 2, 5, seed=3))
    np.testing.assert_array_equal(lazy.test_images(), eager.test_images())
    np.testing.assert_array_equal(lazy.train_images_and_labels()[1], eager.train_images_and_labels()[1])


def test_tfds_missing_dataset_fails_without_downloading_and_says_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_source("tfds:mnist", data_dir=tmp_path)
    assert not (tmp_path / "downloads").exists()  # download=False: nothing was fetched
    message = str(error.value)
    for hint in ("download=True", "manual_dir=DIR", "data_dir", "tfds_idx_builder", "vae-jax[tfds-build]", str(tmp_path)):
        assert hint in message
    # The command line says the same in its flags.
    from vae_jax import cli

    for flag in ("--download", "--manual-dir DIR", "--data-dir"):
        assert flag in cli._with_flags(message)
    with pytest.raises(DatasetNotFoundError, match="no dataset named"):
        load_source("tfds:no_such_dataset_xyz", data_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_tfds_building_without_tensorflow_fails_fast(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="TensorFlow"):
        load_source("tfds:mnist", data_dir=tmp_path, download=True)


# ----------------------------------------------------------------------------- load_source


@pytest.mark.parametrize("spec", ["photo", "tfds:", "folder", "http://x", "idx"])
def test_load_source_rejects_unknown_specs(spec):
    with pytest.raises(ValueError, match=r"photos.*tfds:NAME.*folder:PATH.*idx:PATH"):
        load_source(spec)


def test_load_source_checks_options():
    with pytest.raises(ValueError, match="channels"):
        load_source("photos", channels=2)
    with pytest.raises(ValueError, match="crop_size"):
        load_source("photos", crop_size=0)


def test_import_is_cheap_and_never_imports_tensorflow(tmp_path):
    # A stand-in ``tensorflow`` on the path: any import of it would land in sys.modules.
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import vae_jax.data; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- transforms

ALL_BYTES = jnp.arange(256, dtype=jnp.uint8)


def test_dequantize_range_inverse_and_keys():
    x = jnp.tile(ALL_BYTES, (400, 1))  # every value, 400 draws each
    y = dequantize(x, jax.random.key(0))
    assert y.dtype == jnp.float32
    assert float(y.min()) >= 0.0 and float(y.max()) < 1.0
    np.testing.assert_array_equal(np.floor(256 * np.asarray(y)), np.asarray(x))
    np.testing.assert_array_equal(y, dequantize(x, jax.random.key(0)))
    np.testing.assert_array_equal(y, jax.jit(dequantize)(x, jax.random.key(0)))
    assert not np.array_equal(y, dequantize(x, jax.random.key(1)))
    # The largest possible noise still stays below the next level.
    assert (255 + (2**16 - 1) / 2**16) / 256 < 1.0
    assert abs(float((256 * y - x).mean()) - 0.5) < 0.01


def test_dynamic_binarize_mean_matches_intensity():
    values = jnp.array([0, 1, 64, 128, 200, 255], dtype=jnp.uint8)
    draws = 20000
    y = np.asarray(dynamic_binarize(jnp.tile(values, (draws, 1)), jax.random.key(1)))
    assert set(np.unique(y)) <= {0.0, 1.0} and y.dtype == np.float32
    p = np.asarray(values) / 255
    tolerance = 5 * np.sqrt(p * (1 - p) / draws) + 1e-9  # 5 binomial standard deviations
    assert np.all(np.abs(y.mean(axis=0) - p) <= tolerance), (y.mean(axis=0), p)
    np.testing.assert_array_equal(y, dynamic_binarize(jnp.tile(values, (draws, 1)), jax.random.key(1)))


def test_static_binarize_threshold_and_simple_maps():
    np.testing.assert_array_equal(static_binarize(ALL_BYTES), (np.arange(256) >= 128).astype(np.float32))
    np.testing.assert_array_equal(
        static_binarize(ALL_BYTES, threshold=10), (np.arange(256) >= 10).astype(np.float32)
    )
    np.testing.assert_array_equal(
        to_unit_interval(ALL_BYTES), np.arange(256, dtype=np.float32) / np.float32(255)
    )
    discrete = to_discrete(ALL_BYTES)
    assert discrete.dtype == jnp.int32
    np.testing.assert_array_equal(discrete, np.arange(256))


def test_prepare_dispatches_and_checks():
    x = jnp.tile(ALL_BYTES, (2, 1))
    key = jax.random.key(3)
    np.testing.assert_array_equal(prepare(x, "discrete", key), to_discrete(x))
    np.testing.assert_array_equal(prepare(x, "unit", key), to_unit_interval(x))
    np.testing.assert_array_equal(prepare(x, "static_binary", key), static_binarize(x))
    np.testing.assert_array_equal(prepare(x, "dequantized", key), dequantize(x, key))
    np.testing.assert_array_equal(
        jax.jit(prepare, static_argnums=1)(x, "dynamic_binary", key), dynamic_binarize(x, key)
    )
    with pytest.raises(ValueError, match=r"likelihood_input.*dequantized"):
        prepare(x, "continuous", key)
    with pytest.raises(ValueError, match="key"):
        prepare(x, "dequantized")
    with pytest.raises(ValueError, match="uint8"):
        prepare(x.astype(jnp.float32), "unit")


def test_zooms_and_scales_give_every_scale_its_source_tile_count():
    from PIL import Image

    from vae_jax.data.crops import at_scales, enlarged

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    copies, crops = at_scales([image, small], (1, 2), 16, zooms=(2, 3))
    # image: 2 x 4 tiles of 16 at full resolution; small: 2 x 2. Every kept copy gets its source's count.
    assert [c.shape[:2] for c in copies] == [(40, 70), (20, 35), (80, 140), (120, 210),
                                             (32, 32), (16, 16), (64, 64), (96, 96)]  # fmt: skip
    assert crops == [8, 8, 8, 8, 4, 4, 4, 4]
    expected = np.asarray(Image.fromarray(image).resize((140, 80), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(enlarged(image, 2), expected)
    assert enlarged(image, 1) is image
    source = load_source("photos", scales=(1,), zooms=(2,))
    assert source.num_train == 2 * 2682  # the enlarged copies as often as the photos themselves
    plan = source.crop_plan(0, 0)
    assert np.bincount(plan.image).tolist() == source._crops_per_image.tolist()


@pytest.mark.parametrize("zooms", [(1,), (2, 2), (0,), "2"])
def test_zooms_are_checked(zooms):
    with pytest.raises(ValueError, match="zooms"):
        load_source("photos", zooms=zooms)


def test_permuted_channels_are_the_same_crops_in_a_drawn_order(photos32):
    permuted = load_source("photos", permute_channels=True)
    plan, plain = permuted.crop_plan(3, 0), photos32.crop_plan(3, 0)
    for field in ("image", "top", "left", "flip"):  # the same crops as without permutation
        np.testing.assert_array_equal(getattr(plan, field), getattr(plain, field))
    assert plain.channel_order is None and plan.channel_order.shape == (len(plan.image), 3)
    np.testing.assert_array_equal(np.sort(plan.channel_order, axis=1), np.broadcast_to([0, 1, 2], plan.channel_order.shape))
    orders = {tuple(o) for o in plan.channel_order}
    assert len(orders) == 6  # all 3! orders occur
    batch, reference = permuted.train_batch(0, 16, 3), photos32.train_batch(0, 16, 3)
    for j in range(16):
        np.testing.assert_array_equal(batch[j], reference[j][..., plan.channel_order[j]])
    gray = load_source("photos", channels=1, permute_channels=True)
    assert gray.crop_plan(0, 0).channel_order is None  # one channel: nothing to permute


def test_saturation_gain_moves_colours_from_grey_and_clips_like_a_camera():
    from vae_jax.data.crops import saturate

    crops = np.array([[[[100, 150, 200], [10, 10, 10]]]], np.uint8)  # one 1x2 crop
    np.testing.assert_array_equal(saturate(crops, np.array([1.0])), crops)
    # grey 150: gain 2 -> 150 + 2 * (-50, 0, 50) = (50, 150, 250); gain 4 -> (-50, 150, 350) clipped
    np.testing.assert_array_equal(saturate(crops, np.array([2.0]))[0, 0, 0], [50, 150, 250])
    np.testing.assert_array_equal(saturate(crops, np.array([4.0]))[0, 0, 0], [0, 150, 255])
    np.testing.assert_array_equal(saturate(crops, np.array([0.5]))[0, 0, 0], [125, 150, 175])
    np.testing.assert_array_equal(saturate(crops, np.array([3.0]))[0, 0, 1], [10, 10, 10])  # grey stays grey
    source = load_source("photos", max_saturation=2.0)
    plan = source.crop_plan(0, 0)
    assert plan.saturation.min() >= 0.5 and plan.saturation.max() <= 2.0
    assert (plan.saturation < 1).mean() == pytest.approx(0.5, abs=0.05)  # log-uniform: half below 1
    with pytest.raises(ValueError, match="max_saturation"):
        load_source("photos", max_saturation=0.5)
