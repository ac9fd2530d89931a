"""Lossless compression of real images: the bits-back coder of a trained run against PNG and
WebP-lossless, all timed in the same process on the same machine.

    python -m benchmarks.compression RUN_DIR IMAGE... [--tile-size N] [--elbo-samples K]

Prints a Markdown table, one row per image: its size, the file's bits/dim (everything in it),
the model's -ELBO (the rate the bits-back tiles approach), PNG (Pillow, optimize) and
WebP-lossless (method 6) bits/dim, and encode / decode speed in megapixels per second of
vae-jax (the encoder's number includes nothing but encoding; the verifying decode is timed
apart), PNG and WebP. Every vae-jax file is decoded and checked bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COLUMNS = (
    "image", "size", "vae-jax bits/dim", "-ELBO bits/dim", "PNG bits/dim", "WebP bits/dim",
    "vae-jax enc MP/s", "vae-jax dec MP/s", "PNG enc MP/s", "PNG dec MP/s", "WebP enc MP/s", "WebP dec MP/s",
)  # fmt: skip


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def table_row(name, report) -> list[str]:
    """One Markdown row's cells from ``compression_report``'s dict."""
    height, width = report["image_shape"][:2]
    return [
        name,
        f"{width}x{height} {report['mode']}",
        _number(report["bits_per_dim"], 3),
        _number(report["neg_elbo_bits_per_dim"], 3),
        _number(report.get("png_bits_per_dim"), 3),
        _number(report.get("webp_bits_per_dim"), 3),
        *(_number(report.get(key), 3) for key in ("encode_mpps", "decode_mpps")),
        *(_number(report.get(f"{codec}_{way}_mpps"), 2) for codec in ("png", "webp") for way in ("encode", "decode")),
    ]


def markdown(rows) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a training run directory (its latest checkpoint is used)")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...: coded in their own mode)")
    parser.add_argument("--tile-size", type=int, default=None, help="tile side for fully convolutional models")
    parser.add_argument("--elbo-samples", type=int, default=1, help="posterior draws for the -ELBO column")
    args = parser.parse_args(argv)

    from vae_jax import images, runs
    from vae_jax.apps import compression

    run = runs.load_run(args.run_dir)
    rows = []
    for path in args.images:
        pixels, mode = images.read_exact(path)
        _, report = compression.compression_report(
            run.model, run.params, pixels, mode=mode, tile_size=args.tile_size, elbo_samples=args.elbo_samples
        )
        rows.append(table_row(Path(path).name, report))
        print(f"{path}: done ({report['tiles']} tiles)", file=sys.stderr)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
