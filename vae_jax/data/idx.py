"""MNIST-format idx files (gzipped or not) from a directory, parsed here with NumPy.

The idx format (LeCun's MNIST page): two zero bytes, a type code (0x08 = unsigned byte,
0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions
``n``, then ``n`` big-endian uint32 sizes, then the values big-endian in C order.

``idx:DIR`` expects the four files MNIST and Fashion-MNIST ship, each optionally ``.gz``:
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from vae_jax.data.channels import convert_channels
from vae_jax.data.errors import DataSourceError, IdxFormatError
from vae_jax.data.source import ArraySource

IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``.

    A truncated gzip stream gives back what it holds, so the size check in ``parse_idx`` can say
    how many bytes arrived; a stream that is not gzip at all is an ``IdxFormatError``.
    """
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: expect a gzip header
    try:
        return decompressor.decompress(raw)
    except zlib.error as error:
        raise IdxFormatError(f"{path}: not a valid gzip file ({error})") from None


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """The array an idx file holds, in native byte order; ``path`` only names it in errors."""
    if len(data) < 4:
        raise IdxFormatError(
            f"{path}: truncated idx file: expected at least a 4-byte header, received {len(data)} bytes"
        )
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_DTYPES:
        raise IdxFormatError(
            f"{path}: not an idx file: magic number 0x{data[:4].hex()} should be 0x0000TTNN with "
            f"type code TT in {{{', '.join(f'{code:02x}' for code in IDX_DTYPES)}}}"
        )
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise IdxFormatError(
            f"{path}: truncated idx file: expected a {header_bytes}-byte header, received {len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "too long"
        raise IdxFormatError(
            f"{path}: {problem} idx file of shape {shape}: expected {expected} bytes, received {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (``.gz`` or raw)."""
    path = Path(path)
    return parse_idx(read_file_bytes(path), path)


def find_idx_file(directory: Path, stem: str) -> Path:
    """``directory/stem``, or ``directory/stem.gz`` when only that exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataSourceError(f"{directory}: missing idx file {stem} (or {stem}.gz)")


def read_idx_split(directory: Path, images_stem: str, labels_stem: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W, 1)`` uint8 and labels ``(N,)`` int64 of one split, checked to match."""
    images_path, labels_path = find_idx_file(directory, images_stem), find_idx_file(directory, labels_stem)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IdxFormatError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxFormatError(
            f"{labels_path}: expected {len(images)} labels (one per image in {images_path.name}), "
            f"got shape {labels.shape}"
        )
    return images[..., None], labels.astype(np.int64)


def idx_source(path: str | Path, channels: int | None = None) -> ArraySource:
    """The idx files in directory ``path`` as an ``ArraySource`` (train = train-*, test = t10k-*)."""
    directory = Path(path)
    if not directory.is_dir():
        raise DataSourceError(
            f"idx: {directory} is not a directory (expected one holding {', '.join(IDX_FILES.values())})"
        )
    train_images, train_labels = read_idx_split(
        directory, IDX_FILES["train_images"], IDX_FILES["train_labels"]
    )
    test_images, test_labels = read_idx_split(directory, IDX_FILES["test_images"], IDX_FILES["test_labels"])
    return ArraySource(
        name=f"idx:{directory}",
        train_images=convert_channels(train_images, channels),
        train_labels=train_labels,
        test_images=convert_channels(test_images, channels),
        test_labels=test_labels,
    )
