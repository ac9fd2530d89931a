"""Restoration with the shipped model against the classical tools, in one run on the same crops.

    python -m benchmarks.restoration                       # chelsea + 2 held-out photos, 256x256
    python -m benchmarks.restoration --images chelsea,Dune --size 128 --sigmas 25
    python -m benchmarks.restoration --record              # into docs/results/restoration.{json,md}

Denoising: Gaussian noise of sigma (on 0..255, given to every denoiser) added to each centre
crop with a fixed seed; PSNR, SSIM and wall time of the noisy input, Gaussian blur, total
variation, non-local means, BM3D (when the ``bm3d`` package is installed; else skipped with a
note) and the VAE's MAP (``restoration.denoise``) from each of ``--starts`` (default auto), stopped
by each of ``--stoppings`` (default both: SURE, columns ``vae_map_START``, and the discrepancy
principle, ``vae_map_START_discrepancy``), and that SURE run blended with non-local means (and
BM3D) by the weights of least estimated risk (``restoration.blend``; columns ``vae_blend_*``).
Inpainting: a centre hole (half the side) and half the pixels missing at random; mean fill,
biharmonic and the VAE (``restoration.inpaint``: ``vae_map`` with its validation stopping,
``vae_map_fixed`` every block).

Images: ``chelsea`` (scikit-image; the shipped model's held-out photo) and photographs of Debian's
``mate-backgrounds`` (``/usr/share/backgrounds/mate/nature/NAME.jpg``), none of which the embedded
training set uses (``vae_jax.data.photos.TRAIN_PHOTOS``). A run writes JSON and Markdown to
``runs/benchmarks/restoration`` (``--out``), or with ``--record`` to the repository's
``docs/results/``; it prints ``jax.devices()``, the CPU model and the commit first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

DEFAULT_OUT = Path("runs") / "benchmarks" / "restoration"
RECORDED = Path(__file__).resolve().parent.parent / "docs" / "results"
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
DEFAULT_IMAGES = ("chelsea", "LadyBird", "Dune")
DEFAULT_SIGMAS = (15, 25, 50)


def held_out_photo(name):
    """uint8 (H, W, 3): ``chelsea`` or a mate-backgrounds nature photograph, refused if trained on."""
    import numpy as np

    from vae_jax.data.photos import TRAIN_PHOTOS, load_photos

    if name in TRAIN_PHOTOS:
        raise ValueError(f"--images: {name} is in the embedded training set; pick a held-out photograph")
    if name == "chelsea":
        return np.asarray(load_photos()["chelsea"])
    path = MATE_NATURE / f"{name}.jpg"
    if not path.is_file():
        raise ValueError(f"--images: no {path} (apt-get install mate-backgrounds) and not chelsea")
    from vae_jax import images

    return images.load_image(path, 3)


def centre_crop(image, size):
    """The centred ``size`` x ``size`` crop (the whole image where it is smaller)."""
    height, width = image.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[top : top + size, left : left + size]


VAE_STARTS = ("auto",)
VAE_STOPPINGS = ("sure", "discrepancy")


def column_name(start, stopping):
    """``vae_map_{start}`` with SURE, ``vae_map_{start}_{stopping}`` with another rule."""
    return f"vae_map_{start}" + ("" if stopping == "sure" else f"_{stopping}")


def vae_denoised_image(model, params, sigma, key, noisy, **options):
    """``restoration.denoise``'s image: a one-argument denoiser for ``timed_scores``."""
    from vae_jax.apps import restoration

    return restoration.denoise(model, params, noisy, sigma, key=key, **options).image


def blend_specs():
    """The blends scored, ``{column: with_denoisers}`` (``restoration.denoisers``'s ``blends``): the
    MAP with non-local means (and y), and with non-local means and BM3D where the package is installed."""
    from vae_jax.apps import classical_restoration as classical

    specs = {"vae_blend_nlm": ("non_local_means",)}
    if classical.bm3d_available():
        specs["vae_blend_nlm_bm3d"] = ("non_local_means", "bm3d")
    return specs


def run(names, size, sigmas, *, steps, max_iterations, inpaint_iterations, seed=0, starts=VAE_STARTS,
        stoppings=VAE_STOPPINGS, blends=True, inpaint=True, log=print) -> dict:  # fmt: skip
    """Every method on every crop: ``{"denoise": [rows], "inpaint": [rows]}``, a row one method on one
    image (at one sigma), with its PSNR, SSIM and seconds. The VAE denoises from each of ``starts``
    (``restoration.denoise``'s ``start``) with each of ``stoppings``, one method each:
    ``vae_map_{start}`` with SURE, ``vae_map_{start}_discrepancy`` with the discrepancy principle;
    with ``blends``, the run of the first start and rule blended as ``blend_specs`` says (with
    SURE; its seconds those of the run plus the blend's)."""
    import jax
    import jax.numpy as jnp

    from vae_jax import checks, images, trained
    from vae_jax.apps import classical_restoration as classical
    from vae_jax.apps import restoration

    for start in starts:
        checks.check_choice("--starts", start, restoration.STARTS)
    for stopping in stoppings:
        checks.check_choice("--stoppings", stopping, restoration.STOPPING)
    shipped = trained.load()
    model, params = shipped.model, shipped.params
    rows = {"denoise": [], "inpaint": []}
    compiled = set()
    for index, name in enumerate(names):
        clean = jnp.asarray(images.to_unit(centre_crop(held_out_photo(name), size)))
        shape = f"{clean.shape[1]}x{clean.shape[0]}"
        if shape not in compiled:  # one block of each first, so no row's seconds include compiling
            # Two blocks: the denoiser takes the two grids in turn, one program each, for one run
            # (the discrepancy rule) and for a run and its twin (SURE).
            for stopping in stoppings if sigmas else ():
                restoration.denoise(model, params, clean, 0.1, key=jax.random.key(seed), stopping=stopping, steps=steps,
                                    max_iterations=2, start="noisy", target_discrepancy=None)  # fmt: skip
            restoration.inpaint(model, params, clean, restoration.centre_square_mask(clean.shape[:2]), steps=steps,
                                iterations=1, stopping="fixed")  # fmt: skip
            compiled.add(shape)
        for sigma in sigmas:
            noisy = restoration.add_gaussian_noise(clean, sigma / 255.0, jax.random.fold_in(jax.random.key(seed), index))
            probe_key = jax.random.fold_in(jax.random.key(seed + 2), index)
            # The first start with SURE is the report's vae_map and its blends; every other
            # start and rule is a column of its own.
            first, *others = [(start, stopping) for start in starts for stopping in stoppings]
            options = dict(steps=steps, max_iterations=max_iterations)
            methods = restoration.denoisers(
                model, params, sigma / 255.0, probe_key, blends=blend_specs() if blends else {},
                start=first[0], stopping=first[1], **options,
            )  # fmt: skip
            # Renamed in place: the blends after it reuse its run.
            methods = {column_name(*first) if method == "vae_map" else method: run for method, run in methods.items()}
            for start, stopping in others:
                methods[column_name(start, stopping)] = partial(
                    vae_denoised_image, model, params, sigma / 255.0, probe_key, start=start, stopping=stopping,
                    **options,
                )  # fmt: skip
            scores, _ = restoration.timed_scores(methods, clean, noisy)
            restoration.charge_blends(scores, map_name=column_name(*first))
            for method, score in scores.items():
                rows["denoise"].append({"image": name, "size": shape, "sigma": sigma, "method": method, **score})
            log(f"{name} sigma {sigma}: " + ", ".join(f"{m} {s['psnr']:.2f}" for m, s in scores.items()))
        if not inpaint:
            continue
        masks = {
            "centre": restoration.centre_square_mask(clean.shape[:2]),
            "random": restoration.random_pixel_mask(clean.shape[:2], jax.random.fold_in(jax.random.key(seed + 1), index)),
        }
        for mask_name, mask in masks.items():
            validation_key = jax.random.fold_in(jax.random.key(seed + 3), index)
            methods = restoration.inpainters(model, params, validation_key, steps=steps, iterations=inpaint_iterations)
            methods.pop("masked")
            fixed = restoration.inpainters(model, params, None, steps=steps, iterations=inpaint_iterations,
                                           stopping="fixed")  # fmt: skip
            methods["vae_map_fixed"] = fixed["vae_map"]  # every block, no validation run
            scores, _ = restoration.timed_scores(methods, clean, clean, mask)
            for method, score in scores.items():
                rows["inpaint"].append({"image": name, "size": shape, "mask": mask_name, "method": method, **score})
            log(f"{name} {mask_name}: " + ", ".join(f"{m} {s['psnr']:.2f}" for m, s in scores.items()))
    if not classical.bm3d_available():
        log("note: bm3d is not installed (pip install vae-jax[restoration-baselines]): its rows are skipped")
    return rows


def markdown(results) -> str:
    """Two tables: denoising (one row an image and sigma, PSNR / SSIM / seconds per method) and inpainting."""
    lines = []
    for task, key in (("denoise", "sigma"), ("inpaint", "mask")):
        rows = results["rows"][task]
        if not rows:  # --no-inpaint or --no-denoise
            continue
        methods = list(dict.fromkeys(row["method"] for row in rows))
        cases = list(dict.fromkeys((row["image"], row["size"], row[key]) for row in rows))
        lines += [f"### {'Denoising' if task == 'denoise' else 'Inpainting'}: PSNR dB / SSIM / seconds", ""]
        lines.append("| image | size | " + key + " | " + " | ".join(methods) + " |")
        lines.append("|" + "---|" * (3 + len(methods)))
        for case in cases:
            found = {row["method"]: row for row in rows if (row["image"], row["size"], row[key]) == case}
            best = max((m for m in found if m != "noisy"), key=lambda m: found[m]["psnr"])
            cells = []
            for method in methods:
                row = found.get(method)
                text = "-" if row is None else f"{row['psnr']:.2f} / {row['ssim']:.3f} / {row['seconds']:.1f}"
                cells.append(f"**{text}**" if method == best else text)
            lines.append(f"| {case[0]} | {case[1]} | {case[2]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restoration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=",".join(DEFAULT_IMAGES),
                        help="comma-separated: chelsea and/or mate-backgrounds nature photos (default %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="centre crop side (default %(default)s)")
    parser.add_argument("--sigmas", default=",".join(map(str, DEFAULT_SIGMAS)), help="noise sigmas on 0..255")
    parser.add_argument("--steps", type=int, default=10, help="the VAE's Adam steps between re-encodings")
    parser.add_argument("--max-iterations", type=int, default=25, help="the VAE denoiser's re-encodings at most")
    parser.add_argument("--inpaint-iterations", type=int, default=5, help="the VAE inpainter's re-encodings at most")
    parser.add_argument("--starts", default=",".join(VAE_STARTS), help="the VAE denoiser's starts (default %(default)s)")
    parser.add_argument("--stoppings", default=",".join(VAE_STOPPINGS),
                        help="the VAE denoiser's stopping rules (default %(default)s)")
    parser.add_argument("--no-blends", action="store_true", help="no SURE blends of the MAP with classical denoisers")
    parser.add_argument("--no-inpaint", action="store_true", help="denoising only")
    parser.add_argument("--no-denoise", action="store_true", help="inpainting only")
    parser.add_argument("--out", type=Path, default=None, help=f"folder (default {DEFAULT_OUT})")
    parser.add_argument("--record", action="store_true", help=f"write the JSON to {RECORDED}/restoration.json (the page there quotes the table)")
    args = parser.parse_args(argv)
    if args.record and args.out is not None:
        parser.error("--record writes the recorded results: drop --out")
    from benchmarks import timing

    env = timing.environment()
    print(timing.environment_line(env), file=sys.stderr)
    started = time.perf_counter()
    rows = run(
        args.images.split(","), args.size, [] if args.no_denoise else [float(s) for s in args.sigmas.split(",")],
        steps=args.steps,
        max_iterations=args.max_iterations, inpaint_iterations=args.inpaint_iterations,
        starts=tuple(args.starts.split(",")), stoppings=tuple(args.stoppings.split(",")), blends=not args.no_blends,
        inpaint=not args.no_inpaint,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    results = {
        "environment": env, "load_after": timing.load_average(), "total_seconds": time.perf_counter() - started,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "record")}, "rows": rows,
    }  # fmt: skip
    table = markdown(results)
    out = RECORDED if args.record else (args.out or DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    (out / "restoration.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.record:  # the recorded page is written by hand around the table
        (out / "restoration.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
