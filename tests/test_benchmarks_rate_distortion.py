"""benchmarks.rate_distortion end to end on one small image: every output written, finite numbers."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from benchmarks import rate_distortion


def test_the_benchmark_writes_its_table_plot_and_points(tmp_path):
    rows = np.linspace(0, 255, 192)[:, None, None]
    pixels = np.clip(rows + np.random.default_rng(0).normal(0, 12, (192, 192, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "smooth.png")
    out = tmp_path / "out"
    arguments = [str(tmp_path / "smooth.png"), "--codecs", "jpeg,webp", "--settings-per-codec", "5", "--out", str(out)]
    assert rate_distortion.main(arguments) == 0
    points = json.loads((out / "rate_distortion.json").read_text())["images"]["smooth 192x192"]
    assert {p["codec"] for p in points} >= {"jpeg", "webp"}
    for p in points:
        assert np.isfinite([p["bpp"], p["psnr"], p["ms_ssim"], p["encode_mpps"], p["decode_mpps"]]).all()
        assert p["bpp"] == 8 * p["bytes"] / 192**2
    assert "BD-rate against jpeg" in (out / "rate_distortion.md").read_text()
    assert (out / "rate_distortion.png").stat().st_size > 0
