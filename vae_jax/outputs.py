"""What a run leaves for a person to look at: PNG image grids and a plot of its curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def to_uint8_images(images, input_kind: str) -> np.ndarray:
    """Model-domain images (8-bit values, or [0, 1]) -> uint8 NHWC."""
    images = np.asarray(images, np.float32)
    if input_kind != "discrete":
        images = images * 255.0
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*(H+p)+p, cols*(W+p)+p, C) picture."""
    images = np.asarray(images)
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_png(path: Path, picture: np.ndarray, scale: int = 1) -> Path:
    from PIL import Image

    picture = np.asarray(picture, np.uint8)
    if picture.shape[-1] == 1:
        picture = picture[..., 0]
    image = Image.fromarray(picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return Path(path)


def pairs_grid(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Each original above its reconstruction, column by column."""
    n = len(originals)
    columns = min(n, 8)
    rows = []
    for start in range(0, n, columns):
        rows.extend([originals[start : start + columns], reconstructions[start : start + columns]])
    return image_grid(np.concatenate(rows), columns=columns)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> Path:
    """Training loss and train/test bits/dim against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("split") == "train"]
    test = [r for r in records if r.get("split") == "test"]
    figure, (loss_axis, bpd_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        steps = [r["step"] for r in train]
        loss_axis.plot(steps, [r["loss"] for r in train], label="train loss (nats)")
        loss_axis.plot(steps, [r["kl"] for r in train], label="train KL (nats)")
        bpd_axis.plot(steps, [r["bits_per_dim"] for r in train], label="train -ELBO")
    if test:
        bpd_axis.plot(
            [r["step"] for r in test], [r["bits_per_dim"] for r in test], "o-", label="test -ELBO (EMA)"
        )
    loss_axis.set_xlabel("step")
    bpd_axis.set_xlabel("step")
    bpd_axis.set_ylabel("bits/dim")
    for axis in (loss_axis, bpd_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)


def load_image(path, channels: int) -> np.ndarray:
    """A whole image file as uint8 (H, W, channels): RGB for 3 channels, luma for 1."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            pixels = np.asarray(image, np.uint8)
    except OSError as error:
        raise ValueError(f"{path} is not a readable image: {error}") from error
    return pixels if pixels.ndim == 3 else pixels[..., None]
