"""Lossless compression of real images: the bits-back coder of a trained run against PNG and
WebP-lossless, all timed in the same process on the same machine.

    python -m benchmarks.compression RUN_DIR IMAGE... [--tile-size N] [--elbo-samples K]
    python -m benchmarks.compression shipped IMAGE...   # the model inside the package [--bin-log2 B]
    python -m benchmarks.compression --untrained photos-hvae IMAGE...   # the coder alone, no run

Prints a Markdown table, one row per image: its size, the file's bits/dim (everything in it),
the net rate of the tiles coded with bits back, the model's -ELBO over those tiles (the rate
the net one approaches), the bits the chain start cost (the first tile's missing bits back),
PNG, WebP-lossless and JPEG-XL lossless (``cjxl -d 0 -e 7`` and ``-e 9``, when Debian's
``libjxl-tools`` is installed; "-" and a note otherwise) bits/dim (``vae_jax.codecs`` holds their
settings), and encode / decode speed in megapixels per second of vae-jax (the encoder's number
includes nothing but encoding; the verifying decode is timed apart), the model's batched forward
pass over the image's tiles (64 a call: the ceiling for the coder's speed), PNG, WebP and JPEG-XL
(the wall time of each ``cjxl`` / ``djxl`` command). Every vae-jax file is decoded and checked
bit for bit. ``--warm-up`` codes each image once before timing it, so that its speeds leave out
compiling (the first image of a tile shape otherwise includes it). ``vae-jax compress --report`` gives the same numbers for one image
(``compression.compression_report``). ``--untrained
PRESET`` codes with that preset's model at its initial params plus N(0, 0.01^2) offsets (the
networks then do something; the rates are an untrained model's, ~9 bits/dim, but the file's
overheads over the net rate are measured as for a trained one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COLUMNS = (
    "image", "size", "vae-jax bits/dim", "net bits/dim", "-ELBO bits/dim", "chain start bits", "PNG bits/dim",
    "WebP bits/dim", "JPEG-XL e7 bits/dim", "JPEG-XL e9 bits/dim",
    "vae-jax enc MP/s", "vae-jax dec MP/s", "forward pass MP/s", "PNG enc MP/s", "PNG dec MP/s", "WebP enc MP/s", "WebP dec MP/s",
    "JPEG-XL e7 enc MP/s", "JPEG-XL e7 dec MP/s", "JPEG-XL e9 enc MP/s", "JPEG-XL e9 dec MP/s",
)  # fmt: skip
CLASSICAL = ("png", "webp", "jxl_e7", "jxl_e9")


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(name, report) -> list[str]:
    """One Markdown row's cells from ``compression_report``'s dict."""
    height, width = report["image_shape"][:2]
    return [
        name,
        f"{width}x{height} {report['mode']}",
        _number(report["bits_per_dim"], 3),
        _number(report.get("net_bits_per_dim"), 3),
        _number(report["neg_elbo_bits_per_dim"], 3),
        _number(report.get("chain_start_bits"), 0),
        *(_number(report.get(f"{codec}_bits_per_dim"), 3) for codec in CLASSICAL),
        *(_number(report.get(key), 3) for key in ("encode_mpps", "decode_mpps", "forward_mpps")),
        *(_number(report.get(f"{codec}_{way}_mpps"), 2) for codec in CLASSICAL for way in ("encode", "decode")),
    ]


def markdown(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def untrained(preset, scale=0.01, seed=0):
    """(model, params): ``preset``'s model on 32x32 crops, its initial params plus N(0, scale^2)
    offsets (zero-initialised heads and residual branches then do something)."""
    import jax
    import numpy as np

    import vae_jax
    from vae_jax import config

    model = config.build_model(config.preset(preset), (32, 32, 3))
    leaves, tree = jax.tree_util.tree_flatten(vae_jax.init(model, jax.random.key(seed)))
    rng = np.random.default_rng(seed)
    noisy = [leaf + scale * rng.normal(size=leaf.shape).astype(leaf.dtype) for leaf in leaves]
    return model, jax.tree_util.tree_unflatten(tree, noisy)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", nargs="?", help="a training run directory (its latest checkpoint), or `shipped` for the packaged model"
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...: coded in their own mode)")
    parser.add_argument("--untrained", metavar="PRESET", help="no run: PRESET's model, initial params perturbed")
    parser.add_argument("--tile-size", type=int, default=None, help="tile side for fully convolutional models")
    parser.add_argument("--elbo-samples", type=int, default=1, help="posterior draws for the -ELBO column")
    parser.add_argument("--bin-log2", type=int, default=None, help="latent bins of 2**-B (default: the coder's)")
    parser.add_argument(
        "--warm-up", action="store_true",
        help="code and decode each image once, untimed, first: the speeds then leave out compiling",
    )  # fmt: skip
    args = parser.parse_args(argv)

    from vae_jax import codecs, images, trained
    from vae_jax.apps import compression

    bin_log2 = compression.DEFAULT_BIN_LOG2 if args.bin_log2 is None else args.bin_log2

    paths = args.images
    if args.untrained is None:
        if args.run_dir is None:
            parser.error("give a RUN_DIR (or --untrained PRESET)")
        run = trained.load(None if args.run_dir == "shipped" else args.run_dir)
        model, params = run.model, run.params
    else:
        model, params = untrained(args.untrained)
        paths = [args.run_dir, *paths] if args.run_dir else paths  # no run: every positional is an image
    rows = []
    for path in paths:
        pixels, mode = images.read_exact(path)
        if args.warm_up:
            blob = compression.compress_image(model, params, pixels, mode=mode, tile_size=args.tile_size, bin_log2=bin_log2)
            compression.decompress_image(model, params, blob)
        _, report = compression.compression_report(
            model, params, pixels, mode=mode, tile_size=args.tile_size, elbo_samples=args.elbo_samples,
            bin_log2=bin_log2,
        )
        rows.append(table_row(Path(path).name, report))
        print(f"{path}: done ({report['tiles']} tiles)", file=sys.stderr)
    print(markdown(rows))
    if not codecs.jpeg_xl_available():
        print("note: cjxl/djxl are not installed (apt-get install libjxl-tools): the JPEG-XL columns are empty",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
