"""The ``vae-jax`` command line: the only module that knows about argv and exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from vae_jax import config as config_lib


def _add_run_argument(parser):
    parser.add_argument("run_dir", nargs="?", help="a run directory made by `vae-jax train`")
    parser.add_argument("--run", dest="run_flag", help="the run directory (same as the positional argument)")


class UsageError(ValueError):
    """A command line that asks for something impossible."""


def _run_dir(args) -> Path:
    run_dir = args.run_flag or args.run_dir
    if not run_dir:
        raise UsageError("a run directory is required: vae-jax COMMAND RUN_DIR (or --run RUN_DIR)")
    return Path(run_dir)


def cmd_train(args) -> int:
    from vae_jax import runs

    overrides = config_lib.parse_overrides(args.set or [])
    for name in ("steps", "data", "seed", "batch_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.download:
        overrides["download"] = True
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.manual_dir:
        overrides["manual_dir"] = args.manual_dir
    if args.resume:
        # A resumed run keeps its saved configuration; only the number of steps may grow.
        if not args.run_dir or not (Path(args.run_dir) / "config.json").is_file():
            raise UsageError("--resume needs --run-dir pointing at an existing run (with config.json)")
        config = config_lib.from_json_file(Path(args.run_dir) / "config.json")
        if "steps" in overrides:
            config = dataclasses.replace(config, steps=overrides["steps"])
    else:
        config = config_lib.preset(args.preset, overrides)
    run_dir = Path(args.run_dir or f"runs/{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = runs.train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    if "interrupted_at" in summary:
        return 130
    print(json.dumps({"run_dir": str(run_dir), **summary}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    import jax

    from vae_jax import runs

    run = runs.load_run(_run_dir(args))
    source = runs.open_source(run.config, args.data)
    if tuple(source.image_shape) != tuple(run.model.data_shape):
        raise UsageError(
            f"--data {args.data}: images are {source.image_shape}, the model was trained on {run.model.data_shape}"
        )
    images = source.test_images()
    if args.limit:
        images = images[: args.limit]
    key = jax.random.key(args.seed)
    started = time.perf_counter()
    report = {
        "run_dir": str(run.directory),
        "data": source.name,
        "step": int(run.state.step),
        "elbo": runs.evaluate_elbo(run.model, run.config, run.params, images, key, args.batch_size),
    }
    if args.k > 0:
        report["iwae"] = runs.evaluate_log_likelihood(
            run.model, run.config, run.params, images, jax.random.fold_in(key, 1), args.k, args.batch_size
        )
    report["wall_seconds"] = time.perf_counter() - started
    out = Path(args.output) if args.output else run.directory / "evaluation.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    elbo = report["elbo"]
    print(f"{source.name}: {elbo['num_images']} test images, step {report['step']}")
    print(
        f"  ELBO        {elbo['elbo']:.2f} nats   {elbo['bits_per_dim']:.4f} bits/dim   (KL {elbo['kl']:.2f} nats)"
    )
    if "iwae" in report:
        iw = report["iwae"]
        print(f"  NLL (k={iw['k']}) {iw['nll_nats']:.2f} nats   {iw['bits_per_dim']:.4f} bits/dim")
    print(f"  written to {out}")
    return 0


def cmd_sample(args) -> int:
    import jax

    from vae_jax import objectives, outputs, runs

    run = runs.load_run(_run_dir(args))
    images = objectives.sample(
        run.model,
        run.params,
        jax.random.key(args.seed),
        args.num,
        temperature=args.temperature,
        return_mean=not args.draw,
    )
    kind = "unit" if not args.draw else run.model.likelihood.input_kind
    out = Path(args.output or run.directory / f"samples_t{args.temperature:g}_seed{args.seed}.png")
    outputs.save_png(out, outputs.image_grid(outputs.to_uint8_images(images, kind)), args.scale)
    print(f"wrote {args.num} samples (temperature {args.temperature:g}, seed {args.seed}) to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-jax", description="Variational autoencoders for natural images, in JAX."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model (default: the `photos` preset, ~5 min on 2 CPU cores)"
    )
    train.add_argument("--preset", default="photos", help=f"one of {', '.join(config_lib.PRESETS)}")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    train.add_argument("--run-dir", help="where to write the run (default runs/PRESET-TIMESTAMP)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--data", help="photos | tfds:NAME | folder:PATH | idx:PATH")
    train.add_argument("--download", action="store_true", help="let TFDS download and build the dataset")
    train.add_argument("--data-dir", help="TFDS data directory")
    train.add_argument("--manual-dir", help="TFDS manual-download directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test ELBO, IWAE-k NLL and bits/dim of a run")
    _add_run_argument(evaluate)
    evaluate.add_argument("--data", help="evaluate on another source's test split, e.g. folder:my_photos")
    evaluate.add_argument(
        "--k", type=int, default=1000, help="importance samples for the NLL (0: skip; 5000 to report)"
    )
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--limit", type=int, default=0, help="evaluate the first N test images only")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="JSON report path (default RUN_DIR/evaluation.json)")
    evaluate.set_defaults(handler=cmd_evaluate)

    sample = commands.add_parser("sample", help="a PNG grid of samples from a run's model")
    _add_run_argument(sample)
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--draw", action="store_true", help="draw pixels from p(x|z) instead of showing its mean"
    )
    sample.add_argument("--scale", type=int, default=3, help="pixel upscaling of the PNG")
    sample.add_argument("-o", "--output", help="PNG path")
    sample.set_defaults(handler=cmd_sample)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from vae_jax.checkpoints import CheckpointError
    from vae_jax.data import DataSourceError
    from vae_jax.runs import RunError

    try:
        return args.handler(args)
    except (UsageError, RunError, CheckpointError, DataSourceError, ValueError, FileNotFoundError) as error:
        print(f"vae-jax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
