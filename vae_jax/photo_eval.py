"""A model measured where it would be used: on every tile of whole photographs it never saw, next
to the lossless codecs a user would pick instead (PNG and WebP-lossless of the very same tiles).

Each photograph is cut into its non-overlapping ``tile`` x ``tile`` tiles (the right and bottom
margins that do not fill a tile are left out, for the model and the codecs alike); the model's
ELBO (and, with ``k``, its importance-sampled log-likelihood) is averaged over the tiles, and each
codec compresses every tile as its own file (headers included, as a store of tiles pays them).
Results are bits per dimension, per photograph and over all tiles together.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from vae_jax import codecs
from vae_jax.data.crops import tiles as cut_tiles
from vae_jax.dataset_evaluation import evaluate_elbo, evaluate_log_likelihood

CODECS = codecs.CODECS


def encoded_bytes(picture: np.ndarray, codec: str) -> int:
    """The size of one uint8 (H, W, C) picture as a ``codec`` file (``vae_jax.codecs``' settings)."""
    from PIL import Image

    return len(codecs.encode(Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture), codec))


def codec_bits_per_dim(tiles: np.ndarray) -> dict:
    """Bits/dim of each codec over ``tiles`` (uint8 (N, H, W, C)), every tile its own file."""
    return {codec: 8 * sum(encoded_bytes(tile, codec) for tile in tiles) / tiles.size for codec in CODECS}


def evaluate_tiles(model, params, tiles, key, *, likelihood_input, k=0, batch_size=64, progress=None) -> dict:
    """Bits/dim of the model (ELBO; IS-NLL with ``k`` samples when k > 0) and of the codecs on
    ``tiles`` (uint8 (N, *data_shape)); ``progress(n)`` is called as tiles are done (each tile
    twice with k > 0: the ELBO pass, then the NLL pass)."""
    started = time.perf_counter()
    options = dict(likelihood_input=likelihood_input, batch_size=batch_size, progress=progress)
    elbo = evaluate_elbo(model, params, tiles, key, **options)
    row = {"tiles": len(tiles), "elbo_bits_per_dim": elbo["bits_per_dim"], "elbo": elbo}
    if k > 0:
        nll = evaluate_log_likelihood(model, params, tiles, jax.random.fold_in(key, 1), k=k, **options)
        row.update(nll_bits_per_dim=nll["bits_per_dim"], k=k, iwae=nll)
    codecs = codec_bits_per_dim(tiles)
    row.update(png_bits_per_dim=codecs["png"], webp_bits_per_dim=codecs["webp"])
    row["seconds"] = time.perf_counter() - started
    return row


def evaluate_photos(model, params, photos: dict, key, *, likelihood_input, k=0, batch_size=64, progress=None,
                    max_tiles=None) -> dict:  # fmt: skip
    """``evaluate_tiles`` on every tile of each photograph in ``photos`` (name -> uint8 (H, W, C)),
    or on ``max_tiles`` of them spread evenly through the photo (a cheaper estimate).

    Returns ``{"photos": [row per photo], "overall": row}``, each row with ``tiles``,
    ``elbo_bits_per_dim``, ``nll_bits_per_dim`` (k > 0), ``png_bits_per_dim``,
    ``webp_bits_per_dim`` and ``seconds``; the overall row pools every tile.
    """
    size = model.data_shape[0]
    rows = []
    for index, (name, photo) in enumerate(photos.items()):
        tiles = cut_tiles(np.asarray(photo), size)
        if max_tiles is not None and len(tiles) > max_tiles:
            tiles = tiles[np.linspace(0, len(tiles) - 1, max_tiles).round().astype(int)]
        if len(tiles) == 0:
            rows.append({"name": name, "tiles": 0, "note": f"smaller than one {size}x{size} tile"})
            continue
        row = evaluate_tiles(model, params, tiles, jax.random.fold_in(key, index), likelihood_input=likelihood_input,
                             k=k, batch_size=batch_size, progress=progress)  # fmt: skip
        rows.append({"name": name, **{key: value for key, value in row.items() if key not in ("elbo", "iwae")}})
    measured = [row for row in rows if row["tiles"]]
    count = sum(row["tiles"] for row in measured)
    overall = {"name": "all tiles", "tiles": count, "seconds": sum(row["seconds"] for row in measured)}
    for column in ("elbo_bits_per_dim", "nll_bits_per_dim", "png_bits_per_dim", "webp_bits_per_dim"):
        if measured and column in measured[0]:
            # Every tile has the same number of dims, so the tile-weighted mean is the pooled rate.
            overall[column] = sum(row[column] * row["tiles"] for row in measured) / count
    if k > 0:
        overall["k"] = k
    return {"photos": rows, "overall": overall}


def folder_photos(path, channels=3) -> dict:
    """Every image under ``path`` at its own resolution, by file name (8-bit; see ``images.read_8bit``)."""
    from pathlib import Path

    from vae_jax.data.errors import DataSourceError
    from vae_jax.data.folder import list_image_files
    from vae_jax.images import read_8bit

    folder = Path(path)
    if not folder.is_dir():
        raise DataSourceError(f"folder: {folder} is not a directory")
    files = list_image_files(folder)
    if not files:
        raise DataSourceError(f"folder: no images under {folder}")
    return {str(file.relative_to(folder)): read_8bit(file, channels)[0] for file in files}
