"""Test bits/dim of trained runs on the held-out ``chelsea`` tiles, next to the lossless codecs a
user would pick instead (PNG, WebP-lossless), measured with Pillow on the very same tiles.

    python -m benchmarks.likelihood runs/photos runs/photos-hvae --k 1000 --json out.json

Each codec is measured two ways: every 32x32 tile as its own file (what a user storing tiles
pays, per-file headers included) and the whole photograph as one file (headers amortised).
Models report the ELBO bound and the importance-sampled NLL (k samples) in bits/dim; the
bits-back coder of ``vae_jax.apps.compression`` turns the latter's neighbour, -ELBO, into a
real file within about 1% (see the compression table in the README).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from vae_jax import photo_eval, trained
from vae_jax.dataset_evaluation import evaluate_elbo, evaluate_log_likelihood


def codec_bits_per_dim(tiles: np.ndarray, whole_image: np.ndarray | None) -> list[dict]:
    """Bits/dim of each codec, per tile file and (if given) for the whole image as one file."""
    rows = []
    for codec in photo_eval.CODECS:
        started = time.perf_counter()
        tile_bytes = [photo_eval.encoded_bytes(tile, codec) for tile in tiles]
        rows.append(
            {
                "name": f"{codec} (one file per tile)",
                "bits_per_dim": 8 * sum(tile_bytes) / tiles.size,
                "bytes": sum(tile_bytes),
                "wall_seconds": time.perf_counter() - started,
            }
        )
        if whole_image is not None:
            size = photo_eval.encoded_bytes(whole_image, codec)
            rows.append({"name": f"{codec} (whole photo, one file)", "bits_per_dim": 8 * size / whole_image.size,
                         "bytes": size})  # fmt: skip
    return rows


def model_bits_per_dim(run_dir: Path, tiles: np.ndarray, k: int, batch_size: int) -> dict:
    run = trained.load_run(run_dir)
    key = jax.random.key(0)
    started = time.perf_counter()
    likelihood_input = run.config.likelihood_input
    elbo = evaluate_elbo(run.model, run.params, tiles, key, likelihood_input=likelihood_input, batch_size=batch_size)
    row = {
        "name": f"{run.config.model} VAE ({run_dir.name})",
        "run_dir": str(run_dir),
        "elbo_bits_per_dim": elbo["bits_per_dim"],
        "kl_bits_per_dim": elbo["kl"] / (math.prod(run.model.data_shape) * math.log(2)),
        "steps": run.step,
    }
    if k > 0:
        nll = evaluate_log_likelihood(
            run.model, run.params, tiles, jax.random.fold_in(key, 1), likelihood_input=likelihood_input, k=k,
            batch_size=batch_size,
        )
        row["bits_per_dim"], row["k"] = nll["bits_per_dim"], k
    else:
        row["bits_per_dim"] = elbo["bits_per_dim"]
    row["eval_seconds"] = time.perf_counter() - started
    summary = run_dir / "summary.json"
    if summary.is_file():
        row["train_wall_seconds"] = json.loads(summary.read_text()).get("wall_seconds")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="trained runs on 32x32 photos")
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the NLL (0: ELBO only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)

    import skimage.data

    from vae_jax.data import load_source

    tiles = load_source("photos", crop_size=args.tile).test_images()
    rows = codec_bits_per_dim(tiles, skimage.data.chelsea())
    for run_dir in args.run_dirs:
        rows.append(model_bits_per_dim(run_dir, tiles, args.k, args.batch_size))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    report = {
        "test_set": f"{len(tiles)} non-overlapping {args.tile}x{args.tile} tiles of skimage chelsea",
        "machine": f"{platform.processor() or platform.machine()}, {jax.default_backend()}, "
        f"{jax.devices()[0].device_kind}",
        "commit": commit.stdout.strip(),
        "rows": rows,
    }
    print(f"| {'what':<40} | bits/dim | notes |")
    print(f"| {'-' * 40} | -------- | ----- |")
    for row in sorted(rows, key=lambda r: r["bits_per_dim"]):
        notes = ""
        if "elbo_bits_per_dim" in row:
            notes = f"ELBO {row['elbo_bits_per_dim']:.3f}" + (f", NLL k={row['k']}" if "k" in row else "")
            if row.get("train_wall_seconds"):
                notes += f", trained {row['train_wall_seconds'] / 60:.0f} min ({row['steps']} steps)"
        print(f"| {row['name']:<40} | {row['bits_per_dim']:.3f} | {notes} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
