"""Rate-distortion of the shipped lossy codecs against JPEG, WebP, AVIF and JPEG-XL, on whole
photographs the models never saw: ``python -m benchmarks.rate_distortion [IMAGES...] [--record]``.

Every codec is swept over its settings (``vae_jax.lossy_codecs.DEFAULT_SETTINGS``; vae-jax over
its shipped qualities, each file decoded and checked against the encoder's reconstruction). A point
is bits per pixel (8 * file bytes / (H W)), PSNR on RGB and MS-SSIM, with encode and decode MP/s
timed here. The table gives each codec's Bjontegaard-delta rate (``vae_jax.bjontegaard``) against
JPEG and against WebP per image and its mean over the held-out photographs, in PSNR and MS-SSIM;
the plot, bpp against both. Images: ``chelsea`` and Debian mate-backgrounds nature photographs
(``benchmarks.restoration.held_out_photo`` refuses training photographs). Outputs go to
``runs/benchmarks/rate_distortion/`` (``--record``: ``docs/results/rate-distortion/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = ("chelsea", "LadyBird", "Storm", "Dune")
DEFAULT_OUT = Path("runs/benchmarks/rate_distortion")
RECORDED = Path(__file__).resolve().parent.parent / "docs" / "results" / "rate-distortion"
ANCHORS = ("jpeg", "webp")


def _point(codec, setting, pixels, num_bytes, decoded, encode_seconds, decode_seconds):
    from vae_jax.image_quality import ms_ssim, psnr

    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    return {
        "codec": codec, "setting": setting, "bytes": int(num_bytes),
        "bpp": 8.0 * num_bytes / (pixels.shape[0] * pixels.shape[1]),
        "psnr": psnr(pixels, decoded), "ms_ssim": ms_ssim(pixels, decoded),
        "encode_mpps": megapixels / encode_seconds, "decode_mpps": megapixels / decode_seconds,
    }  # fmt: skip


def classical_points(pixels, codecs, settings_per_codec=None) -> list[dict]:
    from vae_jax import lossy_codecs

    points = []
    for codec in codecs:
        settings = lossy_codecs.DEFAULT_SETTINGS[codec]
        if settings_per_codec:
            settings = settings[:: max(1, len(settings) // settings_per_codec)]
        for setting in settings:
            result = lossy_codecs.round_trip(pixels, codec, setting)
            points.append(_point(codec, setting, pixels, result.num_bytes, result.decoded,
                                 result.encode_seconds, result.decode_seconds))  # fmt: skip
    return points


def learned_points(pixels, log=print) -> list[dict]:
    """vae-jax's shipped qualities, each file decoded and compared with the encoder's reconstruction."""
    from vae_jax.apps import lossy

    names = lossy.shipped_qualities()
    if not names:
        log("note: no lossy codec is shipped in this checkout; vae-jax left out")
        return []
    points = []
    for name in names:
        codec = lossy.load_codec(name)
        # Compile outside the timing, at this image's shape: the jitted programs are specialised to it.
        lossy.decompress(lossy.compress(codec, pixels)[0], codec)
        started = time.perf_counter()
        blob, reconstruction = lossy.compress(codec, pixels)
        encode_seconds = time.perf_counter() - started
        started = time.perf_counter()
        decoded = lossy.decompress(blob, codec)
        decode_seconds = time.perf_counter() - started
        if not np.array_equal(decoded, reconstruction):
            raise RuntimeError(f"{name}: the file does not decode to the encoder's reconstruction")
        point = _point("vae-jax", name, pixels, len(blob), decoded, encode_seconds, decode_seconds)
        point["estimated_bpp"] = lossy.estimated_bits(codec, pixels) / (pixels.shape[0] * pixels.shape[1])
        points.append(point)
    return points


def bd_rates(points, anchor, metric) -> dict:
    """codec -> BD-rate (%) against ``anchor`` in ``metric``, None where the curves do not overlap
    or a curve has fewer than four points."""
    from vae_jax.bjontegaard import bd_rate

    curves = {}
    for p in points:
        curves.setdefault(p["codec"], []).append(p)
    if anchor not in curves:
        return {}
    base = curves[anchor]
    result = {}
    for codec, curve in curves.items():
        if codec == anchor:
            continue
        try:
            result[codec] = bd_rate([p["bpp"] for p in base], [p[metric] for p in base],
                                    [p["bpp"] for p in curve], [p[metric] for p in curve])  # fmt: skip
        except ValueError:
            result[codec] = None
    return result


def _plot(per_image, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(per_image), 2, figsize=(10, 3.4 * len(per_image)), squeeze=False)
    for row, (name, points) in enumerate(per_image.items()):
        for column, metric in enumerate(("psnr", "ms_ssim")):
            axis = axes[row][column]
            for codec in dict.fromkeys(p["codec"] for p in points):
                curve = sorted((p for p in points if p["codec"] == codec), key=lambda p: p["bpp"])
                axis.plot([p["bpp"] for p in curve], [p[metric] for p in curve], "o-", ms=3, label=codec)
            axis.set_xlim(0, 1.6)
            axis.set_xlabel("bits per pixel")
            axis.set_ylabel("PSNR-RGB (dB)" if metric == "psnr" else "MS-SSIM")
            axis.set_title(name)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _fmt(value):
    return "n/a" if value is None else f"{value:+.1f}%"


def table(per_image, held_out) -> str:
    codecs = list(dict.fromkeys(p["codec"] for points in per_image.values() for p in points))
    lines = []
    for anchor in ANCHORS:
        for metric in ("psnr", "ms_ssim"):
            lines += [f"### BD-rate against {anchor}, {metric.upper().replace('_', '-')} (negative: fewer bits)", "",
                      "| image | " + " | ".join(c for c in codecs if c != anchor) + " |",
                      "|---|" + "---|" * (len(codecs) - 1)]  # fmt: skip
            rates = {name: bd_rates(points, anchor, metric) for name, points in per_image.items()}
            for name, row in rates.items():
                lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in codecs if c != anchor) + " |")
            means = []
            for c in codecs:
                if c == anchor:
                    continue
                values = [rates[n].get(c) for n in held_out]
                means.append(None if any(v is None for v in values) or not values else float(np.mean(values)))
            lines += [f"| mean over {', '.join(held_out)} | " + " | ".join(_fmt(m) for m in means) + " |", ""]
    lines += ["### Speed (median over settings and images, MP/s)", "", "| codec | encode | decode |", "|---|---|---|"]
    for c in codecs:
        points = [p for ps in per_image.values() for p in ps if p["codec"] == c]
        lines.append(f"| {c} | {np.median([p['encode_mpps'] for p in points]):.3g} | "
                     f"{np.median([p['decode_mpps'] for p in points]):.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_distortion", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", default=list(DEFAULT_IMAGES),
                        help="chelsea and/or mate-backgrounds nature photos, or PNG paths (default %(default)s)")  # fmt: skip
    parser.add_argument("--codecs", default=None, help="comma-separated classical codecs (default: every installed one)")
    parser.add_argument("--settings-per-codec", type=int, default=None, help="thin each sweep to about this many")
    parser.add_argument("--no-learned", action="store_true", help="leave vae-jax out")
    parser.add_argument("--out", type=Path, default=None, help=f"folder (default {DEFAULT_OUT})")
    parser.add_argument("--record", action="store_true", help=f"write to {RECORDED}")
    args = parser.parse_args(argv)
    if args.record and args.out is not None:
        parser.error("--record writes the recorded results: drop --out")
    import jax

    from benchmarks import timing
    from benchmarks.restoration import held_out_photo
    from vae_jax import images as images_lib
    from vae_jax import lossy_codecs

    env = timing.environment()
    print(timing.environment_line(env), file=sys.stderr)
    available = lossy_codecs.available_codecs()
    codecs = args.codecs.split(",") if args.codecs else list(available)
    for codec in lossy_codecs.CODECS:
        if codec not in available:
            print(f"note: {codec} is not installed here and is left out ({lossy_codecs.INSTALL_HINTS.get(codec, '')})",
                  file=sys.stderr)  # fmt: skip
    per_image = {}
    for name in args.images:
        if Path(name).is_file():
            pixels, mode = images_lib.read_exact(name)
            pixels, name = (pixels if mode == "RGB" else np.repeat(pixels[..., :1], 3, -1)), Path(name).stem
        else:
            pixels = held_out_photo(name)
        points = classical_points(pixels, codecs, args.settings_per_codec)
        if not args.no_learned:
            points += learned_points(pixels, log=lambda line: print(line, file=sys.stderr))
        per_image[f"{name} {pixels.shape[1]}x{pixels.shape[0]}"] = points
        print(f"{name}: {len(points)} points", file=sys.stderr, flush=True)
    held_out = list(per_image)
    out = RECORDED if args.record else (args.out or DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.rate_distortion " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "rate_distortion.json").write_text(json.dumps({"command": command, "environment": env, "images": per_image}, indent=1) + "\n")
    _plot(per_image, out / "rate_distortion.png")
    text = (f"Command: `{command}`; commit {env['git_commit']}; CPU {env['cpu_model']} x {env['cpu_count']}; "
            f"jax.devices(): {jax.devices()}\n\n" + table(per_image, held_out))  # fmt: skip
    (out / "rate_distortion.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
