"""Any TFDS image dataset (``mnist``, ``binarized_mnist``, ``cifar10``, ``celeb_a``, ...) by name.

Reads prepared datasets with ``tfds.data_source`` (the random-access array_record format), which
needs no TensorFlow; ``tensorflow_datasets`` itself is imported only when a TFDS source is opened.
Nothing is downloaded unless asked: with ``download=False`` a missing dataset fails at once with
a ``DatasetNotFoundError`` that says how to get it. Building a dataset (``download=True``, or
``manual_dir`` holding archives the user already has) needs TensorFlow, an optional extra:
``pip install 'vae-jax[tfds-build]'``.

The image feature is ``image`` (or the dataset's only image feature), the label ``label`` when
the dataset has one. Training uses split ``train``; the test split is ``test``, or
``validation`` for datasets without one. Datasets whose training images fit in
``max_in_memory_bytes`` are decoded into memory once; larger ones are decoded batch by batch.

``binarized_mnist`` stores pixels as 0/1 in uint8 images; they are mapped to 0/255 so that every
source keeps the 0..255 uint8 convention (``static_binarize`` then gives the original bits back).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from vae_jax.data.channels import check_channels, convert_channels
from vae_jax.data.errors import DatasetNotFoundError, DataSourceError
from vae_jax.data.source import ArraySource, read_only

MAX_IN_MEMORY_BYTES = 256 * 2**20
# Datasets whose uint8 images hold 0/1 rather than 0..255.
BINARY_PIXEL_DATASETS = frozenset({"binarized_mnist"})
# tfds.data_source reads only random-access formats; building with this one keeps it readable.
_ARRAY_RECORD = {"file_format": "array_record"}


def base_name(name: str) -> str:
    """``"celeb_a/align:2.0.1"`` -> ``"celeb_a"``: the dataset without config or version."""
    return name.split("/")[0].split(":")[0]


def how_to_get(name: str, where: str) -> str:
    """The message for a dataset that is not prepared: what to pass to get it."""
    return (
        f"TFDS dataset {name!r} is not prepared in {where}, and downloading is off. To get it:\n"
        f"  * download and build it: download=True (needs network access), or\n"
        f"  * build it from archives you already have: manual_dir=DIR;\n"
        f"  * or point data_dir at a directory where it is already prepared (for MNIST-format idx\n"
        f"    files: python -m vae_jax.data.tfds_idx_builder IDX_DIR DATA_DIR builds one offline).\n"
        f"Building needs TensorFlow: pip install 'vae-jax[tfds-build]' (tensorflow-cpu)."
    )


def import_tfds():
    """``tensorflow_datasets``, imported on first use (it is slow to import and most runs skip it)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataSourceError(
            f"tfds: cannot import tensorflow_datasets ({error}); pip install tensorflow-datasets"
        ) from None
    return tfds


def open_split(name: str, split: str, *, data_dir=None, manual_dir=None, download: bool = False):
    """``tfds.data_source`` for one split, building the dataset first only when asked and needed.

    A prepared dataset is read even when TensorFlow is absent. An unprepared one is built when
    ``download`` is true or ``manual_dir`` is given (TFDS then downloads what is not in
    ``manual_dir``), which needs TensorFlow: without it the error comes at once.
    """
    tfds = import_tfds()
    try:
        return tfds.data_source(
            name, split=split, data_dir=data_dir, download=False, builder_kwargs=_ARRAY_RECORD
        )
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetNotFoundError(
            f"TFDS has no dataset named {name!r} (tfds.list_builders() lists them)"
        ) from None
    except NotImplementedError as error:  # prepared, but only in a sequential format (tfrecord)
        raise DataSourceError(
            f"TFDS dataset {name!r} is prepared without random access ({error}); rebuild it with "
            f"file_format='array_record' or use another data_dir"
        ) from None
    except (KeyError, AssertionError, FileNotFoundError) as error:  # tfds's ways of saying "not here"
        builder = tfds.builder(name, data_dir=data_dir, **_ARRAY_RECORD)
        if builder.is_prepared():
            raise DataSourceError(
                f"TFDS dataset {name!r}: cannot read split {split!r} ({error}); it has {list(builder.info.splits)}"
            ) from None
        if not (download or manual_dir):
            raise DatasetNotFoundError(how_to_get(name, str(builder.data_dir))) from None
    if importlib.util.find_spec("tensorflow") is None:
        raise DatasetNotFoundError(
            f"TFDS dataset {name!r} is not prepared, and building it needs TensorFlow, which is not "
            f"installed: pip install 'vae-jax[tfds-build]' (tensorflow-cpu)"
        )
    prepare_kwargs = (
        {"download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)} if manual_dir else None
    )
    return tfds.data_source(
        name,
        split=split,
        data_dir=data_dir,
        download=True,
        builder_kwargs=_ARRAY_RECORD,
        download_and_prepare_kwargs=prepare_kwargs,
    )


def image_and_label_keys(features) -> tuple[str, str | None]:
    """The image feature (``image``, or the only one) and the class label (``label``) if any."""
    tfds = import_tfds()
    images = [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)]
    if "image" in images:
        image_key = "image"
    elif len(images) == 1:
        image_key = images[0]
    else:
        raise DataSourceError(
            f"tfds: expected one image feature, found {images or 'none'} in {list(features)}"
        )
    label = features["label"] if "label" in features else None  # noqa: SIM401 (FeaturesDict has no .get)
    label_key = "label" if isinstance(label, tfds.features.ClassLabel) else None
    return image_key, label_key


def test_split_name(splits) -> str:
    """``test``, else ``validation``. An empty ``splits`` (the splits of ``tfds.testing.mock_data``,
    which answers any split name) gives ``test``."""
    names = list(splits)
    for name in ("test", "validation"):
        if not names or name in names:
            return name
    raise DataSourceError(f"tfds: no 'test' or 'validation' split to test on; the dataset has {names}")


def check_image_feature(name: str, feature) -> tuple[int, int, int]:
    """The fixed ``(H, W, C)`` of a uint8 image feature; clear errors for anything else."""
    shape = tuple(feature.shape)
    if len(shape) != 3 or None in shape or shape[2] not in (1, 3):
        raise DataSourceError(
            f"TFDS dataset {name!r}: images of shape {shape} are not supported; vae-jax needs a fixed "
            f"(H, W, 1 or 3) shape (for images of varying size, export them and use folder:PATH)"
        )
    if np.dtype(feature.np_dtype) != np.uint8:
        raise DataSourceError(f"TFDS dataset {name!r}: images are {feature.np_dtype}, vae-jax needs uint8")
    return shape


class ExampleReader:
    """Decodes examples of one split into uint8 images (0..255, ``channels``) and int64 labels.

    Indexing it with an integer array gives those images, so an ``ArraySource`` can use it in
    place of an in-memory array and decode each batch as it is asked for.
    """

    def __init__(self, data_source, image_key, label_key, image_shape, binary_pixels, channels):
        self.data_source = data_source
        self.image_key, self.label_key = image_key, label_key
        self.binary_pixels, self.channels = binary_pixels, channels
        self.stored_shape = tuple(image_shape)
        height, width, stored_channels = image_shape
        self.shape = (len(data_source), height, width, channels or stored_channels)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> np.ndarray:
        return self.images_and_labels(indices)[0]

    def images_and_labels(self, indices) -> tuple[np.ndarray, np.ndarray | None]:
        """Images ``(n, H, W, C)`` and labels ``(n,)`` (None without labels) at ``indices``."""
        # One record at a time: decoding (PNG) dominates and is per record anyway, and the batched
        # ``__getitems__`` of tfds.testing.mock_data's data source is broken in tfds 4.9.10.
        indices = np.asarray(indices).ravel()
        images = np.zeros((len(indices), *self.stored_shape), dtype=np.uint8)
        labels = np.zeros(len(indices), dtype=np.int64) if self.label_key is not None else None
        for row, index in enumerate(indices):
            example = self.data_source[int(index)]
            images[row] = example[self.image_key]
            if labels is not None:
                labels[row] = example[self.label_key]
        if self.binary_pixels:
            images = np.where(images != 0, np.uint8(255), np.uint8(0))
        return convert_channels(images, self.channels), labels

    def read_all(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole split, in order."""
        return self.images_and_labels(np.arange(len(self)))


class LazyArraySource(ArraySource):
    """An ``ArraySource`` over ``ExampleReader``s: training batches are decoded as they are asked
    for, the test split on first use; for datasets too big to hold in memory."""

    def test_images(self):
        return self._read_test()[0]

    def test_labels(self):
        return self._read_test()[1]

    def _read_test(self):
        if not hasattr(self, "_test_cache"):
            self._test_cache = tuple(read_only(array) for array in self._test_images.read_all())
        return self._test_cache

    def train_images_and_labels(self):
        """Decodes the whole training split: mind the memory (``num_train * H * W * C`` bytes)."""
        return self._train_images.read_all()


def tfds_source(
    name: str,
    *,
    channels: int | None = None,
    data_dir=None,
    manual_dir=None,
    download: bool = False,
    max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES,
) -> ArraySource:
    """TFDS dataset ``name`` as an ``ArraySource`` (see the module docstring)."""
    check_channels(channels)
    train = open_split(name, "train", data_dir=data_dir, manual_dir=manual_dir, download=download)
    info = train.dataset_info
    image_key, label_key = image_and_label_keys(info.features)
    image_shape = check_image_feature(name, info.features[image_key])
    binary = base_name(name) in BINARY_PIXEL_DATASETS
    test = open_split(name, test_split_name(info.splits), data_dir=data_dir)

    def reader(data_source):
        return ExampleReader(data_source, image_key, label_key, image_shape, binary, channels)

    train_reader, test_reader = reader(train), reader(test)
    if int(np.prod(train_reader.shape)) > max_in_memory_bytes:
        return LazyArraySource(f"tfds:{name}", train_reader, None, test_reader, None)
    return ArraySource(f"tfds:{name}", *train_reader.read_all(), *test_reader.read_all())
