"""The ``vae-jax`` command line: the only module that knows about argv and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from vae_jax import config as config_lib


def _count(minimum):
    """An argparse type: an integer >= ``minimum``, with the value in the message otherwise."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(text):
    """An argparse type: a finite number > 0, with the value in the message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _positive_floats(text):
    """An argparse type: comma-separated finite numbers > 0, e.g. ``0.5,0.8,1.0``."""
    return [_positive_float(part) for part in text.split(",")]


def _add_run_argument(parser):
    parser.add_argument("run_dir", nargs="?", help="a run directory made by `vae-jax train`")
    parser.add_argument("--run", dest="run_flag", help="the run directory (same as the positional argument)")


class UsageError(ValueError):
    """A command line that asks for something impossible."""


def _named_model(args):
    """The trained model RUN_DIR (or ``--run``) names: a run directory, or pretrained:NAME."""
    from vae_jax import trained

    spec = args.run_flag or args.run_dir
    if not spec:
        raise UsageError("a run directory is required: vae-jax COMMAND RUN_DIR (or --run RUN_DIR)")
    return trained.load(spec)


def _model_of(args):
    """The trained model that ``--run`` (or RUN_DIR) names, else the model shipped inside the package."""
    from vae_jax import trained

    if args.run_flag or getattr(args, "run_dir", None):
        return _named_model(args)
    shipped = trained.load()
    print(f"using the shipped model {shipped.name!r} (pass --run RUN_DIR for your own)", file=sys.stderr)
    return shipped


# Config fields that have a flag of their own; every other field is set with --set FIELD=VALUE.
FIELD_FLAGS = {
    "steps": "--steps", "batch_size": "--batch-size", "seed": "--seed", "data": "--data",
    "data_dir": "--data-dir", "manual_dir": "--manual-dir", "download": "--download",
}  # fmt: skip


def _flag(field: str) -> str:
    return FIELD_FLAGS.get(field, f"--set {field}=...")


def _with_flags(message: str) -> str:
    """A library message, which names config fields ("download=True"), in the command line's terms.
    A list of config keys (after "known keys:") stays in field names: they are what --set takes."""
    text, known, keys = message.partition("known keys:")
    for field, flag in ((r"\bdownload=True", "--download"), (r"\bmanual_dir=DIR", "--manual-dir DIR"),
                        (r"\bdata_dir\b", "--data-dir"), (r"\bforce=True", "--force")):  # fmt: skip
        text = re.sub(field, flag, text)
    return text + known + keys


def _train_overrides(args) -> dict:
    """The config fields this command line sets explicitly (flags and --set)."""
    overrides = config_lib.parse_overrides(args.set or [])
    for name in ("steps", "data", "seed", "batch_size", "data_dir", "manual_dir"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.download:
        overrides["download"] = True
    return overrides


def cmd_train(args) -> int:
    from vae_jax import runs

    overrides = _train_overrides(args)
    if args.resume:
        # A resumed run starts from its saved configuration; anything set here must agree with
        # it (runs.train says which field differs), except steps.
        if args.preset is not None:
            raise UsageError("--preset: a resumed run keeps the configuration in its config.json; drop --preset")
        if not args.run_dir or not (Path(args.run_dir) / "config.json").is_file():
            raise UsageError("--resume needs --run-dir pointing at an existing run (with config.json)")
        saved = config_lib.from_json_file(Path(args.run_dir) / "config.json")
        config = dataclasses.replace(saved, **overrides)
    else:
        preset = args.preset or "photos"
        config = config_lib.preset(preset, overrides)
    run_dir = Path(args.run_dir or f"runs/{args.preset or 'photos'}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.coordinator:
        from vae_jax import parallel

        # A process missing at the start makes JAX abort (not raise) after the timeout: say first what
        # is being waited for, so the abort's "DEADLINE_EXCEEDED ... RegisterTask" has its context.
        print(
            f"vae-jax: process {args.process_id} of {args.num_processes} joining the job at {args.coordinator} "
            f"(every process must join within {args.join_timeout} s)",
            file=sys.stderr, flush=True,
        )
        try:
            parallel.initialize_distributed(
                args.coordinator, args.num_processes, args.process_id, join_timeout_s=args.join_timeout
            )
        except Exception as error:  # noqa: BLE001 (JAX raises bare runtime errors with a long service dump)
            raise UsageError(
                f"--coordinator {args.coordinator}: process {args.process_id} of {args.num_processes} could not "
                f"join the job within {args.join_timeout} s (is every process started, with the same "
                f"--coordinator and --num-processes and its own --process-id?): {str(error).splitlines()[0][:200]}"
            ) from None
    summary = runs.train(
        config, run_dir, resume=args.resume, progress=not args.no_progress, devices=args.devices
    )
    if "interrupted_at" in summary:
        return 143 if summary.get("signal") == "SIGTERM" else 130
    print(json.dumps({"run_dir": str(run_dir), **summary}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    import jax

    from vae_jax import configured, images, photo_eval

    run = _named_model(args)
    folder = bool(args.data and args.data.startswith("folder:"))
    if args.max_tiles and not folder:
        raise UsageError("--max-tiles: applies to --data folder:DIR (tiles of whole photographs) only")
    out = Path(args.output) if args.output else _home(run) / "evaluation.json"
    with _output_check("--output FILE"):
        images.check_writable(out, force=args.force, make_parents=True)
    key, started = jax.random.key(args.seed), time.perf_counter()
    options = dict(likelihood_input=run.config.likelihood_input, k=args.k, batch_size=args.batch_size)
    if folder:
        # Every tile of every photograph in the folder, each photo reported on its own.
        photos = photo_eval.folder_photos(args.data.removeprefix("folder:"), run.model.data_shape[-1])
        if args.limit:
            photos = dict(list(photos.items())[: args.limit])
        tile_counts = [(p.shape[0] // run.model.data_shape[0]) * (p.shape[1] // run.model.data_shape[1]) for p in photos.values()]
        tiles = sum(min(n, args.max_tiles or n) for n in tile_counts)
        with _evaluation_bar(args, tiles) as progress:
            result = photo_eval.evaluate_photos(
                run.model, run.params, photos, key, progress=progress, max_tiles=args.max_tiles or None, **options
            )
        report = {"run_dir": str(run.directory), "data": args.data, "step": run.step, **result}
        rows = [*result["photos"], result["overall"]]
    else:
        source = configured.open_source(run.config, args.data)
        if tuple(source.image_shape) != tuple(run.model.data_shape):
            raise UsageError(
                f"--data {args.data}: images are {source.image_shape}, the model was trained on {run.model.data_shape}"
            )
        test_images = source.test_images()[: args.limit or None]
        if len(test_images) == 0:
            raise UsageError(f"--data: {source.name} has no test images to evaluate")
        with _evaluation_bar(args, len(test_images)) as progress:
            row = photo_eval.evaluate_tiles(
                run.model, run.params, test_images, key, progress=progress, **options
            )
        report = {"run_dir": str(run.directory), "data": source.name, "step": run.step, **row}
        rows = [{"name": f"{source.name} test set", **row}]
    report["wall_seconds"] = time.perf_counter() - started
    _write_report(out, report)
    nll = f"  NLL k={args.k}" if args.k else ""
    print(f"step {report['step']}, bits/dim:  {'images':<36} {'tiles':>6}  ELBO{nll}   PNG    WebP")
    for row in rows:
        if not row["tiles"]:
            print(f"  {row['name']:<46} {row['note']}")
            continue
        nll_value = f"  {row['nll_bits_per_dim']:.4f}" if args.k else ""
        print(
            f"  {row['name'][:44]:<44} {row['tiles']:>6}  {row['elbo_bits_per_dim']:.4f}{nll_value}  "
            f"{row['png_bits_per_dim']:.4f}  {row['webp_bits_per_dim']:.4f}"
        )
    print(f"  written to {out}")
    return 0


class _evaluation_bar:
    """A tqdm bar over the evaluation's tile passes (one ELBO pass, one more with --k), with the
    time left; nothing with --no-progress."""

    def __init__(self, args, tiles):
        self.total = tiles * (2 if args.k else 1)
        self.enabled = not args.no_progress
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="tile", desc="evaluate", dynamic_ncols=True, file=sys.stderr)
        return self.bar.update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


@contextlib.contextmanager
def _output_check(elsewhere: str):
    """Around the checks a command makes, before any work, of every file it will write (not a
    directory, not replaced without --force, in a directory it can write into): a refusal names
    the flag that writes elsewhere (``elsewhere``)."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise UsageError(f"{error}; {elsewhere} writes elsewhere") from None


def _check_out_dir(args, out_dir: Path, names) -> None:
    """The files an app command will write under ``out_dir`` (created if missing), checked first."""
    from vae_jax import images

    with _output_check("--out-dir DIR"):
        images.check_outputs([out_dir / name for name in names], force=args.force, make_parents=True)


def _write_report(path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def _home(run) -> Path:
    """Where a command writes by default: the run's directory; for a shipped model (inside the
    package, not to be written into) the current directory."""
    return run.directory if run.source_kind == "run" else Path()


def _out_dir(args, run, name) -> Path:
    """``--out-dir``, else the run's folder ``name``, else (the shipped model) ``./name``."""
    return Path(args.out_dir) if args.out_dir else _home(run) / name


def _input_image(args, run):
    """The image a command works on: a file, or by default the run's held-out photograph."""
    from vae_jax import configured, images

    channels = run.model.data_shape[-1]
    if args.image:
        return images.load_image(args.image, channels)
    if run.config.data == "photos":
        return _default_photo()
    return configured.open_source(run.config).test_images()[0]


def _default_photo():
    """The held-out photograph of the embedded data (its tiles are the photos test set)."""
    from vae_jax.data.photos import TEST_PHOTO, load_photos

    return np.array(load_photos()[TEST_PHOTO])


def cmd_sample(args) -> int:
    import jax

    from vae_jax.apps import generation

    run = _model_of(args)
    out_dir = _out_dir(args, run, "samples")
    temperatures = args.temperature
    grids = generation.output_files(run.model, temperatures=temperatures, interpolating=False)
    _check_out_dir(args, out_dir, [*grids, "sample.json"])
    report = generation.run_generation(
        run.model, run.params, jax.random.key(args.seed), out_dir=str(out_dir), num_samples=args.num,
        temperatures=temperatures,
    )  # fmt: skip
    report["seed"] = args.seed
    _write_report(out_dir / "sample.json", report)
    print(
        f"wrote {len(report['files'])} sample grids (temperatures {temperatures}, seed {args.seed}) to {out_dir}"
    )
    return 0


def cmd_interpolate(args) -> int:
    import jax

    from vae_jax import configured
    from vae_jax.apps import generation

    if args.images is not None and len(args.images) < 2:
        raise UsageError(
            "--images: expected 2 or more images (each consecutive pair is interpolated), "
            f"got {len(args.images)}"
        )
    if args.images is not None and args.pairs is not None:
        raise UsageError(
            "--pairs: applies to the default test images; with --images each consecutive pair is interpolated"
        )
    run = _model_of(args)
    out_dir = _out_dir(args, run, "interpolate")
    temperatures = (1.0,)  # run_generation also writes one grid of samples beside the strips
    strips = generation.output_files(run.model, temperatures=temperatures, interpolating=True)
    _check_out_dir(args, out_dir, [*strips, "interpolate.json"])
    if args.images:
        endpoints = np.stack([_image_of_model_size(path, run.model) for path in args.images])
    else:
        pairs = args.pairs or 4
        endpoints = configured.open_source(run.config).test_images()[: pairs + 1]
        if len(endpoints) < pairs + 1:
            raise UsageError(
                f"--pairs {pairs}: needs {pairs + 1} test images, the run's data has {len(endpoints)}"
                + (" (pass --images FILE FILE ...)" if len(endpoints) < 2 else "")
            )
        if endpoints.shape[1:] != tuple(run.model.data_shape):
            raise UsageError(f"test images are {endpoints.shape[1:]}, the model takes {run.model.data_shape}")
    report = generation.run_generation(
        run.model, run.params, jax.random.key(args.seed), out_dir=str(out_dir), images_uint8=endpoints,
        num_samples=16, temperatures=temperatures, num_steps=args.steps,
    )  # fmt: skip
    _write_report(out_dir / "interpolate.json", report)
    print(f"wrote {', '.join(Path(f).name for f in report['files'])} to {out_dir}")
    return 0


def _image_of_model_size(path, model):
    from vae_jax import images

    pixels = images.load_image(path, model.data_shape[-1])
    if pixels.shape != tuple(model.data_shape):
        raise UsageError(f"--images: {path} is {pixels.shape}, the model takes {tuple(model.data_shape)}")
    return pixels


def cmd_probe(args) -> int:
    import jax

    from vae_jax import configured
    from vae_jax.apps import representation

    run = _named_model(args)
    out_dir = _out_dir(args, run, "probe")
    _check_out_dir(args, out_dir, [*representation.output_files(run.model), "probe.json"])
    source = configured.open_source(run.config, args.data)
    train_x, train_y = source.train_images_and_labels()
    test_x, test_y = source.test_images(), source.test_labels()
    if train_y is None or test_y is None:
        raise UsageError(
            f"{source.name} has no labels: probe needs labelled data, e.g. --data idx:DIR or tfds:NAME"
        )
    limit = args.train_limit or len(train_x)
    # The probe is fitted full batch and kNN is exact: no randomness, so no --seed (the key is unused).
    report = representation.run_representation(
        run.model, run.params, train_x[:limit], train_y[:limit], test_x, test_y, jax.random.key(0),
        out_dir=str(out_dir), probe_steps=args.probe_steps,
    )  # fmt: skip
    _write_report(out_dir / "probe.json", report)
    for space in ("latent", "pixels"):
        numbers = report[space]
        print(
            f"{space:>7}: linear probe {numbers['probe']['test_accuracy']:.4f}, kNN {numbers['knn_accuracy']:.4f}"
        )
    print(f" chance: {report['chance']:.4f}   ({limit} training images)   written to {out_dir}")
    return 0


def _restore(args, tasks, name, **options) -> int:
    """Degrade the image, restore it every way, print every method's scores and which one is the
    answer (the best PSNR; written as TASK_answer.png). ``options``: the settings the tasks use."""
    import jax

    from vae_jax.apps import restoration

    run = _model_of(args)
    out_dir = _out_dir(args, run, name)
    _check_out_dir(args, out_dir, [*restoration.output_files(tasks), f"{name}.json"])
    image = _input_image(args, run)
    bar, progress = _tile_progress(not args.no_progress, None, "vae-jax", unit="iteration")
    try:
        report = restoration.run_restoration(
            run.model, run.params, image, jax.random.key(args.seed), out_dir=str(out_dir), tasks=tasks,
            progress=progress, **options,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    _write_report(out_dir / f"{name}.json", report)
    for task in tasks:
        scores = ", ".join(
            f"{method} {s['psnr']:.2f} dB/{s['ssim']:.3f} ({s['seconds']:.1f} s)" for method, s in report[task].items()
        )
        print(f"{task}: {scores}")
        print(f"{task}: answer {report[task + '_answer']} (the best PSNR), written to {task}_answer.png")
    print(f"written to {out_dir}")
    return 0


def _denoise_given_noisy(args) -> int:
    """--noisy: the image is the noisy one; no clean reference, so the answer is the one of least
    estimated risk (SURE): the MAP blended with classical denoisers, or with --no-blend the MAP."""
    import jax

    from vae_jax import images
    from vae_jax.apps import restoration

    if not args.image:
        raise UsageError("--noisy: give the noisy IMAGE to denoise")
    run = _model_of(args)
    out_dir = _out_dir(args, run, "denoise")
    _check_out_dir(args, out_dir, ["denoised.png", "denoise.json"])
    noisy = images.to_unit(_input_image(args, run))
    # auto may first spend a pass over the two grids and SURE's patience on the TV start.
    blocks = args.max_iterations + (2 + restoration.SURE_PATIENCE if args.start == "auto" else 0)
    bar, progress = _tile_progress(not args.no_progress, blocks, "vae-jax", unit="iteration")
    key = jax.random.key(args.seed)
    blend_with = () if args.no_blend or args.stopping != "sure" else restoration.default_blend()
    try:
        result = restoration.denoise(
            run.model, run.params, noisy, args.sigma, key=key, stopping=args.stopping, steps=args.steps,
            max_iterations=args.max_iterations, start=args.start, progress=progress,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    how = "estimated by the wavelet MAD estimator (Donoho & Johnstone 1994)" if result.sigma_estimated else "given"
    print(f"noise sigma {result.sigma:.4f} ({how}); vae_map from {result.start} after {result.iterations} iterations")
    answer, image, risk = "vae_map", result.image, min(result.risks, default=None)
    if result.stopping != args.stopping:
        print("SURE estimated a negative error here (its difference quotient failed): the discrepancy rule answered")
        risk = None
    report = {"sigma": result.sigma, "sigma_estimated": result.sigma_estimated, "iterations": result.iterations,
              "start": result.start, "stopping": result.stopping, "residuals": list(result.residuals),
              "risks": list(result.risks)}  # fmt: skip
    if blend_with:
        blended = restoration.blend_denoised(result, noisy, key, blend_with)
        answer, image, risk = "vae_blend", blended.image, blended.risk
        report.update(blend_weights=blended.weights, blend_risks=blended.risks, blend_risk=blended.risk)
        weights = ", ".join(f"{name} {weight:.2f}" for name, weight in blended.weights.items())
        print(f"vae_blend: the weights of least estimated risk, {weights}")
    path = images.save_png(out_dir / "denoised.png", images.to_uint8(image))
    report.update(answer=answer, files=[str(path)])
    _write_report(out_dir / "denoise.json", report)
    if risk is not None and math.isfinite(risk):
        estimate = f"{-10 * math.log10(risk):.2f} dB" if risk > 0 else "none (a negative risk: SURE failed here)"
        print(f"{answer}: SURE's estimate of its PSNR (Stein's unbiased risk, no clean image needed) {estimate}")
    print(f"answer {answer} (the least estimated risk; no clean reference to score against), written to {path}")
    return 0


def cmd_denoise(args) -> int:
    if args.noisy:
        return _denoise_given_noisy(args)
    sigma = 0.1 if args.sigma is None else args.sigma
    return _restore(args, ("denoise",), "denoise", noise_sigma=sigma, steps=args.steps,
                    max_iterations=args.max_iterations, start=args.start, stopping=args.stopping)  # fmt: skip


def cmd_inpaint(args) -> int:
    tasks = ("inpaint_centre", "inpaint_random")
    return _restore(args, tasks, "inpaint", steps=args.steps, iterations=args.iterations)


def _tile_progress(enabled, total, what, unit="tile"):
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, desc=what, dynamic_ncols=True, file=sys.stderr)
    return bar, bar.update


def _compress_inputs(names):
    """The image files ``compress`` was given, a folder standing for its images (recursively,
    sorted: what a ``folder:PATH`` dataset reads)."""
    from vae_jax.data.folder import IMAGE_SUFFIXES, list_image_files

    paths = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                raise UsageError(f"{path}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
        else:
            paths.append(path)
    if len({p.resolve() for p in paths}) != len(paths):
        raise UsageError("an image is named twice")
    return paths


def _megapixel_progress(enabled, images_and_tiles, what):
    """A bar in megapixels (rate in MP/s, time left) over coding passes of images: per image its
    (H * W, blocks); ``progress(k)`` after k blocks moves it by their share of the image."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    shares = [(pixels / 1e6 / blocks, blocks) for pixels, blocks in images_and_tiles]
    total = round(sum(share * blocks for share, blocks in shares), 6)
    bar = tqdm(total=total, unit="MP", desc=what, dynamic_ncols=True, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} MP [{elapsed}<{remaining}, {rate_noinv_fmt}]")  # fmt: skip
    # The bar is set to the blocks' running sum, held to the total (the last update reaches it
    # exactly): a sum of thousands of float shares may end a hair past the rounded total.
    done = list(itertools.accumulate(share for share, blocks in shares for _ in range(blocks)))
    position = 0

    def progress(blocks):
        nonlocal position
        position = min(position + blocks, len(done))
        target = total if position == len(done) else min(done[position - 1], total)
        bar.update(target - bar.n)

    return bar, progress


def _lossy_codec(args):
    """The lossy codec of ``--quality Q`` (the shipped ``photos-rd-qQ``) or of a ``--run`` that is a
    rate-distortion run; None when the command is lossless."""
    from vae_jax import trained
    from vae_jax.apps import lossy

    if args.quality is not None:
        if args.run_flag:
            raise UsageError("--quality picks a shipped lossy codec; --run names your own: give one of them")
        name = f"photos-rd-q{args.quality}"
        if name not in lossy.shipped_qualities():
            raise UsageError(
                f"--quality {args.quality}: no shipped lossy codec {name!r} (shipped: "
                f"{', '.join(q.removeprefix('photos-rd-q') for q in lossy.shipped_qualities()) or 'none'}); "
                f"train it with `vae-jax train --preset {name}` and pass --run RUN_DIR"
            )
        return lossy.load_codec(name)
    if args.run_flag and (Path(args.run_flag) / "config.json").is_file():
        run = trained.load(args.run_flag)
        if run.config.model == "hyperprior":
            return lossy.make_codec(run.model, run.params, run.name[-lossy.NAME_BYTES :])
    return None


def _compress_lossy(args, codec, paths, outputs) -> int:
    """Lossy files of every image (each checked first: alpha and 16-bit are refused before any is
    written), verified by decoding unless --no-verify; bits per pixel and PSNR printed."""
    from vae_jax import images
    from vae_jax.apps import lossy

    if args.report or args.tile_size or args.seed is not None:
        raise UsageError("--report, --tile-size and --seed are the lossless coder's; the lossy codec takes none")
    pictures = [images.read_exact(path) for path in paths] if paths else [(_default_photo(), "RGB")]
    for path, (pixels, mode) in zip(paths or ["the default photograph"], pictures):
        if mode not in ("L", "RGB"):
            raise UsageError(f"{path}: the lossy codec codes 8-bit greyscale and RGB images, not {mode}; nothing was written")
    iterator = zip(outputs, pictures)
    if not args.no_progress and len(pictures) > 1:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(pictures), unit="image", desc="compress", file=sys.stderr)
    reports = []
    for output, (pixels, mode) in iterator:
        original = pixels[..., 0] if mode == "L" else pixels
        started = time.perf_counter()
        blob, reconstruction = lossy.compress(codec, original)
        encode_seconds = time.perf_counter() - started
        if not args.no_verify:
            started = time.perf_counter()
            if not np.array_equal(lossy.decompress(blob, codec), reconstruction):
                raise RuntimeError(f"{output}: the file does not decode to the encoder's reconstruction; not written")
            decode_seconds = time.perf_counter() - started
        output.write_bytes(blob)  # its path was checked with every other output before any work
        megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
        report = {
            "file": str(output), "codec": codec.name, "mode": mode, "file_bytes": len(blob),
            "bits_per_pixel": 8 * len(blob) / (pixels.shape[0] * pixels.shape[1]),
            "psnr": lossy.psnr(original, reconstruction), "encode_mpps": megapixels / encode_seconds,
            "decode_mpps": None if args.no_verify else megapixels / decode_seconds,
        }  # fmt: skip
        reports.append(report)
        verified = "verified by decoding" if not args.no_verify else "not verified (--no-verify)"
        print(f"{output}: {len(blob)} bytes, {report['bits_per_pixel']:.4f} bits/pixel, PSNR {report['psnr']:.2f} dB "
              f"(lossy, {codec.name}, {mode}); {verified}")  # fmt: skip
    if len(reports) > 1:
        _write_report(outputs[0].parent / "compress.json", {"images": [str(p) for p in paths], "files": reports})
    else:
        _write_report(outputs[0].with_name(outputs[0].name + ".json"), reports[0])
    return 0


def cmd_compress(args) -> int:
    from vae_jax import images
    from vae_jax.apps import compression

    codec = _lossy_codec(args)
    if args.seed is not None and not args.report:
        raise UsageError("--seed: sets the -ELBO draws of --report; give --report too")
    paths = _compress_inputs(args.images)
    several = len(paths) > 1 or any(Path(name).is_dir() for name in args.images)
    if several:
        if args.report:
            raise UsageError("--report compares one image with the other codecs; give one image with it")
        if not args.output:
            raise UsageError("several images: -o DIR names the folder their .vae files go to")
        outputs = [Path(args.output) / (path.stem + ".vae") for path in paths]
        if len(set(outputs)) != len(outputs):
            raise UsageError("two images share a name (their .vae files would collide in -o DIR)")
        with _output_check("-o DIR"):
            images.check_outputs(outputs + [Path(args.output) / "compress.json"], force=args.force, make_parents=True)
    else:
        output = Path(args.output or (paths[0].with_suffix(".vae") if paths else "chelsea.vae"))
        outputs = [output]
        with _output_check("-o FILE"):
            images.check_outputs([output, output.with_name(output.name + ".json")], force=args.force)
    if codec is not None:
        if several:
            Path(args.output).mkdir(parents=True, exist_ok=True)
        return _compress_lossy(args, codec, paths, outputs)
    if args.report and args.no_verify:
        raise UsageError("--report times the decoder too; drop --no-verify")
    pictures = [images.read_exact(path) for path in paths] if paths else [(_default_photo(), "RGB")]
    run = _model_of(args)
    tile_hw = compression.tile_hw_for(run.model, args.tile_size)  # a bad --tile-size fails before any work
    passes = 1 if args.no_verify else 2  # encode, then the verifying decode
    sizes = [(pixels.shape[0] * pixels.shape[1], compression.num_tiles(run.model, pixels.shape, tile_hw))
             for pixels, _ in pictures]  # fmt: skip
    bar, progress = _megapixel_progress(not args.no_progress, sizes + sizes * (passes - 1), "compress")
    options = dict(tile_size=args.tile_size, force=args.force, progress=progress, verify=not args.no_verify)
    try:
        if several:
            Path(args.output).mkdir(parents=True, exist_ok=True)
            reports = compression.run_compressions(
                run.model, run.params, [pixels for pixels, _ in pictures], out_paths=outputs,
                modes=[mode for _, mode in pictures], **options,
            )  # fmt: skip
        else:
            (pixels, mode), = pictures
            reports = [compression.run_compression(
                run.model, run.params, pixels, out_path=outputs[0], mode=mode, report=args.report, seed=args.seed,
                **options,
            )]  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    verified = "verified by decoding: exact" if not args.no_verify else "not verified (--no-verify)"
    for report in reports:
        decode = f", decode {report['decode_mpps']:.3g} MP/s" if report["decode_mpps"] else ""
        print(f"{report['file']}: {report['file_bytes']} bytes, {report['bits_per_dim']:.4f} bits/dim "
              f"({report['mode']}); {verified}{decode}")  # fmt: skip
    if several:
        _write_report(Path(args.output) / "compress.json", {"images": [str(p) for p in paths], "files": reports})
        megapixels = sum(pixels for pixels, _ in sizes) / 1e6
        print(f"{len(reports)} images, {megapixels:.3f} MP coded together: encode {reports[0]['encode_mpps']:.3g} MP/s")
    else:
        report = reports[0]
        _write_report(outputs[0].with_name(outputs[0].name + ".json"), report)
        print(f"  encode {report['encode_mpps']:.3g} MP/s")
    if args.report:
        names = {"neg_elbo": "-ELBO", "net": "net", "png": "PNG", "webp": "WebP-lossless", "jxl_e7": "JPEG-XL -e 7"}
        rates = {name: reports[0].get(f"{key}_bits_per_dim") for key, name in names.items()}
        known = ", ".join(f"{name} {rate:.4f}" for name, rate in rates.items() if rate is not None)
        print(f"  bits/dim: {known}; the chain start cost {reports[0]['chain_start_bits']:.0f} bits")
    return 0


def cmd_decompress(args) -> int:
    from vae_jax import images
    from vae_jax.apps import compression

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"compressed file {path} does not exist")
    output = Path(args.output or path.with_suffix(".png"))
    with _output_check("-o FILE.png"):
        images.check_exact_output(output, force=args.force)
    blob = path.read_bytes()
    from vae_jax.apps import lossy

    if lossy.is_lossy_file(blob):
        codec = lossy.load_codec(args.run_flag) if args.run_flag else None
        fields = lossy.read_header(blob)
        pixels = lossy.decompress(blob, codec)
        images.write_exact(output, pixels if pixels.ndim == 3 else pixels[..., None], fields["mode"], force=args.force)
        print(f"{output}: {fields['width']}x{fields['height']} {fields['mode']} decoded from {path} (lossy, {fields['name']})")
        return 0
    fields = compression.read_header(blob)
    run = _model_of(args)
    shape = (fields["height"], fields["width"], fields["channels"])
    total = compression.num_tiles(run.model, shape, (fields["tile_height"], fields["tile_width"]))
    bar, progress = _megapixel_progress(not args.no_progress, [(shape[0] * shape[1], total)], "decompress")
    try:
        pixels = compression.decompress_image(run.model, run.params, blob, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    images.write_exact(output, pixels, fields["mode"], force=args.force)
    print(f"{output}: {pixels.shape[1]}x{pixels.shape[0]} {fields['mode']} decoded from {path}")
    return 0


def _add_force_argument(parser):
    parser.add_argument(
        "--force", action="store_true", help="replace output files that exist (else refused, before any work)"
    )


def _restore_parser(commands, name, handler, help_text):
    """What denoise and inpaint share; each adds the settings its own task uses."""
    restore = commands.add_parser(name, help=help_text)
    restore.add_argument("image", nargs="?", help="image file (default: the run's held-out photograph)")
    restore.add_argument("--run", dest="run_flag", help="a run directory (default: the shipped model)")
    restore.add_argument("--seed", type=_count(0), default=0)
    restore.add_argument("--out-dir", help=f"default RUN_DIR/{name} (./{name} for the shipped model)")
    restore.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_force_argument(restore)
    restore.set_defaults(handler=handler, run_dir=None)
    return restore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-jax", description="Variational autoencoders for natural images, in JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model (default: the `photos` preset)"
    )
    train.add_argument("--preset", help=f"one of {', '.join(config_lib.PRESETS)} (default photos)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    train.add_argument("--run-dir", help="where to write the run (default runs/PRESET-TIMESTAMP)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    train.add_argument("--steps", type=_count(0))
    train.add_argument("--batch-size", type=_count(1))
    train.add_argument("--seed", type=_count(0))
    train.add_argument("--data", help="photos | tfds:NAME | folder:PATH | idx:PATH")
    train.add_argument("--download", action="store_true", help="let TFDS download and build the dataset")
    train.add_argument("--data-dir", help="TFDS data directory")
    train.add_argument("--manual-dir", help="TFDS manual-download directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--devices", type=_count(0), default=1, help="data-parallel over N devices (0: all)")
    train.add_argument("--coordinator", help="multi-host: coordinator HOST:PORT for jax.distributed")
    train.add_argument("--num-processes", type=_count(1), help="multi-host: number of processes")
    train.add_argument("--process-id", type=_count(0), help="multi-host: this process's index")
    train.add_argument("--join-timeout", type=_count(1), default=120,
                       help="multi-host: seconds to wait for every process to join before failing")  # fmt: skip
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test ELBO, IWAE-k NLL and bits/dim of a run")
    _add_run_argument(evaluate)
    evaluate.add_argument(
        "--data", help="another source's test split, or folder:DIR: every tile of every photograph in DIR"
    )
    evaluate.add_argument(
        "--k", type=_count(0), default=1000, help="importance samples for the NLL (0: skip; 5000 to report)"
    )
    evaluate.add_argument("--batch-size", type=_count(1), default=64)
    evaluate.add_argument(
        "--limit", type=_count(0), default=0, help="the first N test images (folder: photographs) only (0: all)"
    )
    evaluate.add_argument(
        "--max-tiles", type=_count(0), default=0,
        help="folder: at most N tiles of each photograph, spread evenly through it (0: every tile)",
    )  # fmt: skip
    evaluate.add_argument("--seed", type=_count(0), default=0)
    evaluate.add_argument(
        "--output", help="JSON report path (default RUN_DIR/evaluation.json; for a run you cannot write into)"
    )
    _add_force_argument(evaluate)
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=cmd_evaluate)

    sample = commands.add_parser("sample", help="PNG grids of samples at one or more temperatures")
    _add_run_argument(sample)
    sample.add_argument("--num", type=_count(1), default=64)
    sample.add_argument(
        "--temperature", type=_positive_floats, default="1.0", help="comma-separated, each > 0: 0.5,0.8,1.0"
    )
    sample.add_argument("--seed", type=_count(0), default=0)
    sample.add_argument("--out-dir", help="default RUN_DIR/samples (./samples for the shipped model)")
    _add_force_argument(sample)
    sample.set_defaults(handler=cmd_sample)

    interpolate = commands.add_parser("interpolate", help="latent interpolation strips between real images")
    _add_run_argument(interpolate)
    interpolate.add_argument(
        "--images", nargs="+", help="2 or more image files of the model's size (default: test images)"
    )
    interpolate.add_argument(
        "--pairs", type=_count(1), help="consecutive test-image pairs when --images is not given (default 4)"
    )
    interpolate.add_argument("--steps", type=_count(2), default=8)
    interpolate.add_argument("--seed", type=_count(0), default=0)
    interpolate.add_argument("--out-dir", help="default RUN_DIR/interpolate")
    _add_force_argument(interpolate)
    interpolate.set_defaults(handler=cmd_interpolate)

    probe = commands.add_parser(
        "probe", help="linear-probe and kNN accuracy of posterior means vs raw pixels"
    )
    _add_run_argument(probe)
    probe.add_argument("--data", help="labelled source (default: the run's own)")
    probe.add_argument("--train-limit", type=_count(0), default=10000, help="training images used (0: all)")
    probe.add_argument("--probe-steps", type=_count(1), default=500)
    probe.add_argument("--out-dir", help="default RUN_DIR/probe")
    _add_force_argument(probe)
    probe.set_defaults(handler=cmd_probe)

    denoise = _restore_parser(
        commands, "denoise", cmd_denoise,
        "denoise an image with the VAE prior: add Gaussian noise of --sigma, score it against TV, non-local "
        "means and BM3D, write the best; or --noisy: denoise the image as it is",
    )  # fmt: skip
    denoise.add_argument(
        "--sigma", type=_positive_float, default=None,
        help="noise standard deviation on [0, 1] pixels (default 0.1; with --noisy: the image's, default "
        "estimated by the wavelet MAD estimator)",
    )  # fmt: skip
    denoise.add_argument(
        "--noisy", action="store_true",
        help="IMAGE is already noisy: no clean reference; the VAE's MAP blended with classical denoisers by the "
        "weights of least estimated risk is written (--no-blend: the MAP)"
    )
    denoise.add_argument("--steps", type=_count(1), default=10, help="Adam steps on x between re-encodings")
    denoise.add_argument(
        "--max-iterations", type=_count(1), default=25,
        help="re-encodings at most (the run stops earlier by its --stopping rule)",
    )  # fmt: skip
    denoise.add_argument(
        "--no-blend", action="store_true",
        help="with --noisy: write the VAE's MAP alone, not its SURE blend with non-local means (and BM3D when "
        "installed) and the noisy image",
    )  # fmt: skip
    denoise.add_argument(
        "--stopping", choices=("sure", "discrepancy"), default="sure",
        help="when the MAP run stops (default sure: the block of least estimated mean squared error, by "
        "Stein's unbiased risk estimate on a twin run, twice the cost a block; discrepancy: the first block "
        "whose residual reaches the noise's)",
    )  # fmt: skip
    denoise.add_argument(
        "--start", choices=("auto", "total_variation", "noisy", "gaussian_blur"), default="auto",
        help="the image the MAP starts from (default auto: the total-variation denoiser's, or, where that "
        "run ends within its first two blocks, the noisy image's run too: with sure, the lower risk of the two)",
    )  # fmt: skip
    inpaint = _restore_parser(
        commands, "inpaint", cmd_inpaint,
        "inpaint a centre square and random pixels of an image with the VAE prior, scored against biharmonic "
        "inpainting and a mean fill; the best is written",
    )  # fmt: skip
    inpaint.add_argument("--steps", type=_count(1), default=10, help="Adam steps on the unknown pixels between re-encodings")
    inpaint.add_argument(
        "--iterations", type=_count(1), default=10,
        help="re-encodings at most (rounds of --steps steps; how many is chosen on known pixels held out of a first run)",
    )  # fmt: skip

    compress = commands.add_parser(
        "compress",
        help="compress images: lossless (bits-back ANS under the shipped VAE, the default) or lossy with "
        "--quality Q (a shipped rate-distortion codec; --run RUN_DIR of a hyperprior run for your own)",
    )  # fmt: skip
    compress.add_argument(
        "images", nargs="*", metavar="IMAGE",
        help="image files or folders of them (default: the held-out photograph); several are coded together",
    )  # fmt: skip
    compress.add_argument(
        "-o", "--output", help="compressed file (default IMAGE.vae); for several images the folder of their .vae files"
    )
    compress.add_argument("--no-verify", action="store_true", help="skip the decode that checks each file")
    compress.add_argument(
        "--quality", type=_count(1), default=None,
        help="lossy: the shipped codec photos-rd-qQ (higher Q: more bits, less distortion); default lossless",
    )  # fmt: skip
    compress.add_argument("--run", dest="run_flag", help="a run directory (default: the shipped model)")
    compress.add_argument(
        "--report", action="store_true",
        help="also the model's -ELBO of the image and PNG / WebP-lossless of it, timed (in FILE.vae.json too)",
    )  # fmt: skip
    compress.add_argument("--seed", type=_count(0), default=None, help="the -ELBO draws of --report (default 0)")
    compress.add_argument(
        "--tile-size", type=_count(1), default=None,
        help="largest tile side for fully convolutional models (a multiple of the model's tile unit; "
        "default: the crop size the model was trained on); the first tiles are smaller until the bits-back "
        "chain can fund this size",
    )  # fmt: skip
    _add_force_argument(compress)
    compress.add_argument("--no-progress", action="store_true", help="no progress bar")
    compress.set_defaults(handler=cmd_compress, run_dir=None)

    decompress = commands.add_parser(
        "decompress", help="decode a .vae file, lossless (the exact image) or lossy (its reconstruction), to PNG"
    )
    decompress.add_argument("file")
    decompress.add_argument("-o", "--output", help="PNG path (default FILE with .png; never replaced without --force)")
    decompress.add_argument(
        "--run", dest="run_flag", help="the run directory that compressed it (default: the shipped model)"
    )
    _add_force_argument(decompress)
    decompress.add_argument("--no-progress", action="store_true", help="no progress bar")
    decompress.set_defaults(handler=cmd_decompress, run_dir=None)
    return parser


def _use_compilation_cache() -> None:
    """JAX's persistent compilation cache in the user's cache folder (``$XDG_CACHE_HOME/vae-jax/xla``,
    else ``~/.cache/vae-jax/xla``), unless JAX_COMPILATION_CACHE_DIR names another or
    VAE_JAX_NO_COMPILATION_CACHE is set: the coder runs a few dozen small programs per tile shape,
    and compiling them again costs each fresh process tens of seconds. A cached executable is the
    program a fresh compile makes (JAX keys it by the program, its options and the backend)."""
    import os

    if os.environ.get("VAE_JAX_NO_COMPILATION_CACHE") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    if jax.config.jax_compilation_cache_dir:  # a host (a test runner) chose its own
        return
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    jax.config.update("jax_compilation_cache_dir", str(root / "vae-jax" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _use_compilation_cache()
    if sys.unraisablehook is sys.__unraisablehook__:  # not when a host (a test runner) set its own
        sys.unraisablehook = _ignore_closed_event_loops
    from vae_jax.apps.compression import CompressionError
    from vae_jax.checkpoints import CheckpointError
    from vae_jax.data import DataSourceError
    from vae_jax.runs import RunError

    try:
        return args.handler(args)
    except config_lib.ConfigError as error:
        print(f"vae-jax {args.command}: error: {_flag(error.field)}: {error}", file=sys.stderr)
        return 2
    except (UsageError, RunError, CheckpointError, CompressionError, DataSourceError, ValueError, TypeError,
            FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as error:  # fmt: skip
        print(f"vae-jax {args.command}: error: {_with_flags(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        where = f" {error.filename}" if error.filename else ""
        print(
            f"vae-jax {args.command}: error: could not write{where}: {error.strerror} (the disk is full or the "
            f"file-size limit, ulimit -f, is reached); what was written before is intact",
            file=sys.stderr,
        )
        return 2


def _ignore_closed_event_loops(unraisable) -> None:
    """A ``sys.unraisablehook``: after a failed checkpoint write, TensorStore's callbacks for the
    writes still in flight each report "Event loop is closed" (orbax closed it on the first error),
    up to the process's end, after the one error the command prints; the rest as Python does."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    sys.exit(main())
