"""A real TFDS dataset, prepared by TFDS itself offline, read through ``--data tfds:NAME``.

Builds Fashion-MNIST from the idx files of Debian's ``dataset-fashion-mnist`` package (or, when
that is not installed, from small idx files written here) with ``vae_jax.data.tfds_idx_builder``
into array_record files, then trains and evaluates on it with the CLI in a subprocess. Building
needs TensorFlow (``pip install 'vae-jax[tfds-build]'``), so the test skips without it.
"""

import gzip
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_jax.data.idx import IDX_FILES, read_idx_split
from vae_jax.data.tfds_idx_builder import DATASET_VERSION, build_idx_dataset
from vae_jax.data.tfds_source import open_split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LIMIT = 100


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _idx_dir(tmp_path) -> tuple[Path, int]:
    """The Debian idx files if installed, else 200 train / 50 test random 28x28 images; and the
    test split's size."""
    if all((DEBIAN_FASHION_MNIST / f"{stem}.gz").is_file() for stem in IDX_FILES.values()):
        return DEBIAN_FASHION_MNIST, 10_000
    directory = tmp_path / "idx"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", 200), ("t10k", 50)):
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    return directory, 50


def _cli(*args, cwd):
    command = [sys.executable, "-m", "vae_jax.cli", *args]
    result = subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"vae-jax {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_train_and_evaluate_on_a_tfds_prepared_dataset(tmp_path):
    pytest.importorskip(
        "tensorflow",
        reason="building a TFDS dataset needs TensorFlow: pip install 'vae-jax[tfds-build]' (tensorflow-cpu)",
    )

    idx_dir, num_test = _idx_dir(tmp_path)
    data_dir = tmp_path / "tfds"
    name = build_idx_dataset(idx_dir, data_dir)

    # TFDS wrote the dataset: its array_record shards and dataset_info.json, nothing mocked.
    version_dir = data_dir / name / DATASET_VERSION
    shards = sorted(path.name for path in version_dir.glob("*.array_record*"))
    assert any(".array_record-" in shard and "-train." in shard for shard in shards), shards
    assert any("-test." in shard for shard in shards), shards
    info = json.loads((version_dir / "dataset_info.json").read_text())
    assert {split["name"] for split in info["splits"]} == {"train", "test"}

    # Read back by name alone (the builder class is not registered), as the CLI will: the idx
    # files' test images and labels, in their order.
    test_split = open_split(name, "test", data_dir=str(data_dir))
    images, labels = read_idx_split(idx_dir, IDX_FILES["test_images"], IDX_FILES["test_labels"])
    assert len(test_split) == len(images) == num_test
    for index in range(0, num_test, num_test // 10):
        example = test_split[index]
        np.testing.assert_array_equal(example["image"], images[index])
        assert example["label"] == labels[index]

    run_dir = tmp_path / "run"
    data = ["--data", f"tfds:{name}", "--data-dir", str(data_dir)]
    sets = ["--set", "eval_every=0", "--set", "checkpoint_every=0", "--set", "steps_per_dispatch=5"]
    _cli("train", "--preset", "fashion-mnist", *data, "--steps", "10", "--batch-size", "32",
         "--run-dir", str(run_dir), "--no-progress", *sets, cwd=tmp_path)  # fmt: skip
    assert json.loads((run_dir / "config.json").read_text())["data"] == f"tfds:{name}"

    _cli("evaluate", str(run_dir), "--k", "0", "--limit", str(LIMIT), cwd=tmp_path)
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["data"] == f"tfds:{name}"
    elbo = report["elbo"]
    assert elbo["num_images"] == min(LIMIT, num_test)
    assert math.isfinite(elbo["elbo"]) and math.isfinite(elbo["bits_per_dim"])
    # Bernoulli pixels: a coin flip is 1 bit/dim; 10 steps of training stay near that, far from 10.
    assert 0 < elbo["bits_per_dim"] < 10
