"""What a run leaves for a person to look at: PNG image grids and a plot of its curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np

from vae_jax import images, objectives


def image_grid(pictures: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*(H+p)+p, cols*(W+p)+p, C) picture."""
    pictures = np.asarray(pictures)
    count, height, width, channels = pictures.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8
    )
    for index, image in enumerate(pictures):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_grid(path, images01, cols=None, pad=1, scale=1) -> Path:
    """Write a batch of [0, 1] images as one PNG grid; return the path."""
    return images.save_png(path, image_grid(images.to_uint8(images01), columns=cols, padding=pad), scale)


def pairs_grid(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Each original above its reconstruction, column by column."""
    n = len(originals)
    columns = min(n, 8)
    rows = []
    for start in range(0, n, columns):
        rows.extend([originals[start : start + columns], reconstructions[start : start + columns]])
    return image_grid(np.concatenate(rows), columns=columns)


def write_pictures(run_dir: Path, model, params, test_images: np.ndarray, key, *, likelihood_input: str,
                   grid_size: int, tags) -> None:  # fmt: skip
    """Grids of prior samples (likelihood means) and of test images above their reconstructions,
    as ``samples_TAG.png`` and ``reconstructions_TAG.png`` in ``run_dir`` for each tag."""
    sample_key, recon_key, data_key = jax.random.split(key, 3)
    means = objectives.sample(model, params, sample_key, num_samples=grid_size**2, return_mean=True)
    sample_grid = image_grid(images.to_uint8(means))
    originals = test_images[: min(16, len(test_images))]
    x = images.prepare(originals, likelihood_input, data_key)
    reconstructions = objectives.reconstruct(model, params, x, recon_key)
    pairs = pairs_grid(originals, images.to_uint8(reconstructions))
    for tag in tags:
        images.save_png(Path(run_dir) / f"samples_{tag}.png", sample_grid, 3)
        images.save_png(Path(run_dir) / f"reconstructions_{tag}.png", pairs, 3)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> Path:
    """Training loss and train/test bits/dim (a lossy codec's: bits per pixel) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("split") == "train"]
    test = [r for r in records if r.get("split") == "test"]
    rate = "bits_per_dim" if all("bits_per_dim" in r for r in train + test) else "bits_per_pixel"
    figure, (loss_axis, bpd_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps = [r["step"] for r in train]
        loss_axis.plot(steps, [r["loss"] for r in train], label="train loss (nats)")
        # The IWAE objective logs its bound, not a KL; the curve shows whichever terms were logged.
        if all("kl" in r for r in train):
            loss_axis.plot(steps, [r["kl"] for r in train], label="train KL (nats)")
        bpd_axis.plot(steps, [r[rate] for r in train], label="train -ELBO" if rate == "bits_per_dim" else "train rate")
    if test:
        bpd_axis.plot(
            [r["step"] for r in test], [r[rate] for r in test], "o-",
            label="test -ELBO (EMA)" if rate == "bits_per_dim" else "test rate, rounded (EMA)",
        )
    loss_axis.set_xlabel("step")
    bpd_axis.set_xlabel("step")
    bpd_axis.set_ylabel("bits/dim" if rate == "bits_per_dim" else "bits/pixel")
    for axis in (loss_axis, bpd_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)
