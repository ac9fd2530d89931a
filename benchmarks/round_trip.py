"""A user's lossless round trip, timed as a user meets it: `vae-jax compress IMAGE` (which decodes
its file once to verify it) and then `vae-jax decompress`, each a fresh process, against
JPEG-XL lossless (`cjxl -d 0 -e 7`, then `djxl`), back to back on the same machine.

    python -m benchmarks.round_trip IMAGE... [--run RUN_DIR] [--cold]

Prints a Markdown table, one row per image: its size, the seconds of each command (wall time of
the whole process: Python and JAX start-up, the model's load, compiling, coding), the round
trip's total and its ratio to JPEG-XL's, and both files' bits/dim. Every decoded image is
checked against the original pixels. The vae-jax processes use JAX's persistent compilation
cache as the CLI does (a run before the timed one fills it, so the times are a returning user's);
``--cold`` gives them an empty cache instead (a first run's). JPEG-XL's columns are "-" with a
note when `cjxl` / `djxl` are not installed (apt-get install libjxl-tools).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = (
    "image", "size", "vae-jax compress s", "vae-jax decompress s", "vae-jax round trip s", "JPEG-XL e7 encode s",
    "JPEG-XL decode s", "JPEG-XL round trip s", "ratio", "vae-jax bits/dim", "JPEG-XL bits/dim",
)  # fmt: skip


def _timed(command, env=None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _vae_jax(*args) -> list[str]:
    return [sys.executable, "-m", "vae_jax.cli", *args, "--no-progress"]


def round_trip(image: Path, work: Path, run=None, cold=False) -> dict:
    """Seconds and bits/dim of one image's round trip through vae-jax and through JPEG-XL."""
    import numpy as np

    from vae_jax import images

    pixels, _ = images.read_exact(image)
    dims = pixels.size
    model = ["--run", str(run)] if run else []
    env = dict(os.environ)
    if cold:
        env["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(dir=work)
    else:  # a returning user's cache, filled by one untimed round trip
        subprocess.run(_vae_jax("compress", str(image), "-o", str(work / "warm.vae"), "--force", *model),
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    coded, back = work / f"{image.stem}.vae", work / f"{image.stem}.back.png"
    row = {
        "image": image.name,
        "size": f"{pixels.shape[1]}x{pixels.shape[0]}",
        "compress": _timed(_vae_jax("compress", str(image), "-o", str(coded), "--force", *model), env),
        "decompress": _timed(_vae_jax("decompress", str(coded), "-o", str(back), "--force", *model), env),
        "vae_bits_per_dim": 8 * coded.stat().st_size / dims,
    }
    if not np.array_equal(images.read_exact(back)[0], pixels):
        raise AssertionError(f"{image}: vae-jax's round trip is not exact")
    row["vae"] = row["compress"] + row["decompress"]
    if shutil.which("cjxl") and shutil.which("djxl"):
        jxl, jxl_back = work / f"{image.stem}.jxl", work / f"{image.stem}.jxl.png"
        row["jxl_encode"] = _timed(["cjxl", "-d", "0", "-e", "7", str(image), str(jxl)])
        row["jxl_decode"] = _timed(["djxl", str(jxl), str(jxl_back)])
        if not np.array_equal(images.read_exact(jxl_back)[0], pixels):
            raise AssertionError(f"{image}: JPEG-XL's round trip is not exact")
        row["jxl"] = row["jxl_encode"] + row["jxl_decode"]
        row["jxl_bits_per_dim"] = 8 * jxl.stat().st_size / dims
    return row


def markdown(rows) -> str:
    def cell(row, key, digits):
        return "-" if row.get(key) is None else f"{row[key]:.{digits}f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        ratio = {"ratio": row["vae"] / row["jxl"]} if row.get("jxl") else {}
        cells = [row["image"], row["size"], cell(row, "compress", 1), cell(row, "decompress", 1), cell(row, "vae", 1),
                 cell(row, "jxl_encode", 2), cell(row, "jxl_decode", 2), cell(row, "jxl", 2), cell(ratio, "ratio", 1),
                 cell(row, "vae_bits_per_dim", 3), cell(row, "jxl_bits_per_dim", 3)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.round_trip", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG: cjxl reads PNG, JPEG, PPM)")
    parser.add_argument("--run", help="a run directory (default: the shipped model)")
    parser.add_argument("--cold", action="store_true", help="vae-jax with an empty compilation cache (a first run)")
    args = parser.parse_args(argv)
    for image in args.images:
        if not image.is_file():
            parser.error(f"no image file {image}")
    with tempfile.TemporaryDirectory() as work:
        rows = [round_trip(image, Path(work), args.run, args.cold) for image in args.images]
    print(markdown(rows))
    if not (shutil.which("cjxl") and shutil.which("djxl")):
        print("note: cjxl/djxl are not installed (apt-get install libjxl-tools): no JPEG-XL columns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
