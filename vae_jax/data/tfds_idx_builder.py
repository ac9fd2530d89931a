"""Build a real TFDS dataset (array_record) from MNIST-format idx files, offline.

    python -m vae_jax.data.tfds_idx_builder /usr/share/datasets/fashion-mnist ~/tfds-data
    vae-jax train --preset fashion-mnist --data tfds:fashion_mnist_idx --data-dir ~/tfds-data

Why: ``tfds:NAME`` reads datasets that TFDS itself prepared, and TFDS's own builders download
their archives. This builder takes the four idx files MNIST and Fashion-MNIST ship (for example
Debian's ``dataset-fashion-mnist`` package, under /usr/share/datasets/fashion-mnist) from TFDS's
manual directory instead, so nothing is downloaded, and writes ``train`` and ``test`` splits
(``image`` uint8 HxWx1, ``label`` ClassLabel) in the array_record format ``tfds.data_source``
reads.

Building needs TensorFlow (TFDS encodes the images with it): ``pip install 'vae-jax[tfds-build]'``.
Reading does not: the builder class is never registered, so a reader that only knows the name
(``tfds.data_source(name, data_dir=...)``) loads the dataset from its files and their
``dataset_info.json``; this module is needed only to build. Nothing in ``vae_jax`` imports it.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import tempfile
from pathlib import Path

from vae_jax.data.errors import DataSourceError
from vae_jax.data.idx import IDX_FILES, find_idx_file, read_idx, read_idx_split

DEFAULT_NAME = "fashion_mnist_idx"
DATASET_VERSION = "1.0.0"


def idx_image_shape(path: Path) -> tuple[int, int, int]:
    """``(H, W, 1)`` from an idx3 file's header alone (the feature spec is needed before reading)."""
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as handle:
        header = handle.read(16)
    if len(header) < 16 or header[2] != 0x08 or header[3] != 3:
        raise DataSourceError(f"{path}: expected an idx3 file of uint8 images (N, H, W)")
    return int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big"), 1


def make_builder_class(name: str, image_shape: tuple[int, int, int], num_classes: int):
    """A ``GeneratorBasedBuilder`` named ``name``, made per build since shape and classes come from
    the files. ``skip_registration``: registering would tie readers to this code (and forbid a
    second class of the same name), while unregistered names are read from the prepared files."""
    import tensorflow_datasets as tfds

    class IdxImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(DATASET_VERSION)
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Put the four idx files (" + ", ".join(IDX_FILES.values()) + ", each optionally .gz) "
            "in the manual directory, e.g. /usr/share/datasets/fashion-mnist from Debian's "
            "dataset-fashion-mnist package."
        )

        def _info(self):
            label = tfds.features.ClassLabel(num_classes=num_classes)
            # DatasetInfo itself, not dataset_info_from_configs: that reads README/CITATIONS files
            # from the defining module's package, which fails under `python -m` (``__main__``).
            return tfds.core.DatasetInfo(
                builder=self,
                description="Images and labels from MNIST-format idx files (vae_jax.data.tfds_idx_builder).",
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(shape=image_shape), "label": label}
                ),
                supervised_keys=("image", "label"),
                # Keep the idx files' order (TFDS shuffles by key hash otherwise), so that
                # tfds:NAME and idx:DIR hold the same test images in the same order (--limit N).
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            directory = Path(dl_manager.manual_dir)
            return {
                split: self._generate_examples(
                    directory, IDX_FILES[f"{split}_images"], IDX_FILES[f"{split}_labels"]
                )
                for split in ("train", "test")
            }

        def _generate_examples(self, directory, images_stem, labels_stem):
            images, labels = read_idx_split(directory, images_stem, labels_stem)
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": image, "label": int(label)}

    IdxImages.name = name
    return IdxImages


def build_idx_dataset(idx_dir, data_dir, name: str = DEFAULT_NAME) -> str:
    """Build the idx files in ``idx_dir`` as TFDS dataset ``name`` (array_record) under ``data_dir``.

    Returns ``name``, to pass as ``--data tfds:NAME --data-dir DATA_DIR``. An already prepared
    dataset of that name and version is kept as it is. ``name`` must not be one of TFDS's own
    builders (``fashion_mnist``): a reader would then use that builder's code and version.
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise DataSourceError(
            "building a TFDS dataset needs TensorFlow, which is not installed: "
            "pip install 'vae-jax[tfds-build]' (tensorflow-cpu)"
        )
    import tensorflow_datasets as tfds

    try:
        tfds.builder_cls(name)
    except tfds.core.registered.DatasetNotFoundError:
        pass
    else:
        raise DataSourceError(f"{name!r} is one of TFDS's own builders; choose another name ({DEFAULT_NAME})")
    idx_dir = Path(idx_dir)
    image_shape = idx_image_shape(find_idx_file(idx_dir, IDX_FILES["train_images"]))
    num_classes = 1 + max(
        int(read_idx(find_idx_file(idx_dir, IDX_FILES[key])).max()) for key in ("train_labels", "test_labels")
    )
    builder_cls = make_builder_class(name, image_shape, num_classes)
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
    config = tfds.download.DownloadConfig(manual_dir=str(idx_dir), try_download_gcs=False)
    # Nothing is downloaded; the scratch download directory keeps data_dir free of an empty one.
    with tempfile.TemporaryDirectory() as scratch:
        builder.download_and_prepare(download_dir=scratch, download_config=config)
    return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vae_jax.data.tfds_idx_builder",
        description="Build a TFDS dataset (array_record) from MNIST-format idx files, offline.",
    )
    parser.add_argument("idx_dir", help="directory holding the four idx files (.gz or raw)")
    parser.add_argument("data_dir", help="TFDS data directory to build into")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    args = parser.parse_args(argv)
    try:
        name = build_idx_dataset(args.idx_dir, args.data_dir, name=args.name)
    except DataSourceError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"--data tfds:{name} --data-dir {args.data_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
