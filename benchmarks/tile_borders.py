"""Where the shipped lossless model's bits go inside a tile: the first row and column against the interior.

    python -m benchmarks.tile_borders                      # chelsea + 3 held-out photos, 640 wide at most
    python -m benchmarks.tile_borders --images chelsea --width 0

The coder codes every tile as an image of its own: its first row has no pixel above it, its first
column none to its left, though the decoder already knows the tiles above and to the left. This
measures what that costs: -log2 p(x | z) per sub-pixel (z one posterior draw) of every whole tile
of each photograph, averaged over row 0, column 0, the corner and the pixels two or more rows and
columns in; and the file's saving if row 0 and column 0 cost what the interior does (the most that
reading the neighbouring tiles could give, since the interior pixels already see a full context),
as a share of the -ELBO. Images as in ``benchmarks.restoration`` (none in the training set),
resized with Lanczos to ``--width`` (0: full size); the partial tiles at the right and bottom edges
are left out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_IMAGES = ("chelsea", "LadyBird", "Storm", "Dune")
BATCH = 64


def whole_tiles(image, tile_hw):
    """(n, th, tw, C) int32: the image's whole tiles in raster order."""
    import numpy as np

    (th, tw), channels = tile_hw, image.shape[-1]
    rows, cols = image.shape[0] // th, image.shape[1] // tw
    cut = image[: rows * th, : cols * tw].reshape(rows, th, cols, tw, channels)
    return np.ascontiguousarray(cut.transpose(0, 2, 1, 3, 4).reshape(-1, th, tw, channels)).astype(np.int32)


def border_costs(model, params, tiles, key) -> dict:
    """Bits per sub-pixel of the likelihood by place in the tile, the KL's, and the saving."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    @jax.jit
    def per_pixel_bits(batch, key):
        terms = model.infer(params, batch, jax.random.split(key, batch.shape[0]))
        nats = -model.likelihood.log_prob(batch.astype(jnp.float32), terms.decoder_out)
        return nats / math.log(2.0), sum(terms.kl_groups) / math.log(2.0)

    bits, kl = [], []
    for start in range(0, len(tiles), BATCH):
        b, k = per_pixel_bits(jnp.asarray(tiles[start : start + BATCH]), jax.random.fold_in(key, start))
        bits.append(np.asarray(b, np.float64))
        kl.append(np.asarray(k, np.float64))
    channels = tiles.shape[-1]
    per_dim, kl = np.concatenate(bits) / channels, np.concatenate(kl)  # (n, th, tw); (n,)
    interior = per_dim[:, 2:, 2:].mean()
    edge_bits = per_dim[:, 0, :].sum() + per_dim[:, 1:, 0].sum()
    edge_count = per_dim.shape[0] * (per_dim.shape[1] + per_dim.shape[2] - 1)
    total = per_dim.sum() + kl.sum() / channels
    return {
        "tiles": len(tiles),
        "neg_elbo_bits_per_dim": float(total / per_dim.size),
        "row0": float(per_dim[:, 0, 1:].mean()),
        "col0": float(per_dim[:, 1:, 0].mean()),
        "corner": float(per_dim[:, 0, 0].mean()),
        "interior": float(interior),
        "kl_bits_per_dim": float(kl.sum() / channels / per_dim.size),
        "edge_share_of_likelihood": float(edge_bits / per_dim.sum()),
        "saving_at_interior_cost": float((edge_bits - edge_count * interior) / total),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tile_borders", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--images", default=",".join(DEFAULT_IMAGES), help="chelsea or mate-backgrounds nature names"
    )
    parser.add_argument(
        "--width", type=int, default=640, help="resize wider photos to this width (0: full size)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    import jax
    import numpy as np
    from PIL import Image

    from benchmarks import timing
    from benchmarks.restoration import held_out_photo
    from vae_jax import trained

    env = timing.environment()
    print(timing.environment_line(env))
    shipped = trained.load()
    model, params = shipped.model, shipped.params
    tile_hw = model.data_shape[:2]
    rows = []
    for index, name in enumerate(args.images.split(",")):
        image = held_out_photo(name)
        if args.width and image.shape[1] > args.width:
            height = round(image.shape[0] * args.width / image.shape[1])
            image = np.asarray(Image.fromarray(image).resize((args.width, height), Image.LANCZOS))
        costs = border_costs(
            model, params, whole_tiles(image, tile_hw), jax.random.fold_in(jax.random.key(args.seed), index)
        )
        rows.append({"image": name, "size": f"{image.shape[1]}x{image.shape[0]}", **costs})
    print(
        f"| image | size | tiles of {tile_hw[0]}x{tile_hw[1]} | -ELBO | row 0 | column 0 | corner | interior | KL "
        "| row 0 + column 0 share of the likelihood | saving at interior cost |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['image']} | {row['size']} | {row['tiles']} | {row['neg_elbo_bits_per_dim']:.3f} | {row['row0']:.3f} "
            f"| {row['col0']:.3f} | {row['corner']:.3f} | {row['interior']:.3f} | {row['kl_bits_per_dim']:.3f} "
            f"| {100 * row['edge_share_of_likelihood']:.1f}% | {100 * row['saving_at_interior_cost']:.2f}% |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"environment": env, "command": " ".join(sys.argv), "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
