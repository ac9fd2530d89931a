"""Reproductions of published tables, one resumable command per row.

    python -m benchmarks.reproduce iwae-mnist --row vae-1layer-k1 --data idx:DIR
    python -m benchmarks.reproduce iwae-mnist --row iwae-1layer-k5 --data idx:DIR --estimate
    python -m benchmarks.reproduce iwae-mnist --report

``iwae-mnist`` is Table 1 of Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders"
(ICLR 2016): test log-likelihood on dynamically binarized MNIST, estimated with k = 5000
importance samples on all 10,000 test images, and the number of active units (Cov_x(E_q[u]) >
1e-2) per stochastic layer. A row trains its preset (``iwae-mnist-1layer`` or ``-2layer``: the
paper's architecture, Adam, batch 20 and 3280-epoch schedule) with the row's objective into
``OUT/ROW`` (rerun the command to resume after an interruption), then evaluates it and writes
``OUT/ROW/reproduction.json``; ``--report`` gathers the rows into ``OUT/iwae-mnist.md``.
``--estimate`` times a few thousand steps of the row and prints the full schedule's wall time on
this machine instead of training (``--row all``: every row's). ``--steps N`` runs a shortened
schedule of the same shape (the result then says so). ``--seed N`` and ``--set FIELD=VALUE``
train the row again beside it, from another seed or with a setting of its preset changed (an
ablation), into a run directory named after them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

# Everything a long run may need is imported up front, so a run started before the package's
# files change on disk keeps using one consistent version of them.
import vae_jax.data.idx
import vae_jax.data.tfds_source
import vae_jax.stochastic_mlp  # noqa: F401
from vae_jax import config as config_lib
from vae_jax import configured, runs, trained, warm_start
from vae_jax.data import prepare
from vae_jax.dataset_evaluation import evaluate_elbo, evaluate_log_likelihood


@dataclasses.dataclass(frozen=True)
class Row:
    preset: str
    objective: str
    k: int
    paper_nll: float  # nats, Burda et al. (2016) Table 1, MNIST
    paper_active_units: str  # as the paper prints them ("19"); "" where not transcribed here


IWAE_MNIST_ROWS = {
    "vae-1layer-k1": Row("iwae-mnist-1layer", "elbo", 1, 86.76, "19"),
    "vae-1layer-k5": Row("iwae-mnist-1layer", "elbo", 5, 86.47, "20"),
    "vae-1layer-k50": Row("iwae-mnist-1layer", "elbo", 50, 86.35, "20"),
    "iwae-1layer-k1": Row("iwae-mnist-1layer", "iwae", 1, 86.76, "19"),
    "iwae-1layer-k5": Row("iwae-mnist-1layer", "iwae", 5, 85.54, "22"),
    "iwae-1layer-k50": Row("iwae-mnist-1layer", "iwae", 50, 84.78, "25"),
    "vae-2layer-k1": Row("iwae-mnist-2layer", "elbo", 1, 85.33, ""),
    "vae-2layer-k5": Row("iwae-mnist-2layer", "elbo", 5, 85.01, ""),
    "vae-2layer-k50": Row("iwae-mnist-2layer", "elbo", 50, 84.78, ""),
    "iwae-2layer-k1": Row("iwae-mnist-2layer", "iwae", 1, 85.33, ""),
    "iwae-2layer-k5": Row("iwae-mnist-2layer", "iwae", 5, 83.89, ""),
    "iwae-2layer-k50": Row("iwae-mnist-2layer", "iwae", 50, 82.90, ""),
}
# IWAE with k = 1 and the VAE with k = 1 have one objective, and the paper prints one number for
# both: its code trains both on the one-sample estimate of log w = log p(x, z) - log q(z | x). Here
# the ``vae-*`` rows differentiate the ELBO with the top layer's KL in closed form (the same
# objective, a gradient of lower variance) and the ``iwae-*-k1`` rows the paper's code's estimate.
FULL_SCHEDULE_EPOCHS = 3280
ACTIVE_UNIT_THRESHOLD = 1e-2


# What a row is, or has a flag of its own: not for --set.
ROW_FIELDS = ("objective", "k", "data", "steps", "seed", "model", "latent_sizes", "widths")


def row_config(
    name: str, data: str, steps: int | None = None, seed: int | None = None, settings: dict | None = None
) -> config_lib.Config:
    """The row's preset with its objective and ``k``; ``settings`` change other fields of it (an
    ablation: the row trained with one thing done differently)."""
    if name not in IWAE_MNIST_ROWS:
        raise SystemExit(f"--row: unknown {name!r}; expected one of {', '.join(IWAE_MNIST_ROWS)}")
    fixed = sorted(set(settings or {}) & set(ROW_FIELDS))
    if fixed:
        raise SystemExit(f"--set {', '.join(fixed)}: fixed by the row or set by a flag of its own")
    row = IWAE_MNIST_ROWS[name]
    overrides = {**(settings or {}), "objective": row.objective, "k": row.k, "data": data}
    if steps is not None:
        overrides["steps"] = steps
    if seed is not None:
        overrides["seed"] = seed
    try:
        return config_lib.validate(config_lib.preset(row.preset, overrides))
    except config_lib.ConfigError as error:
        raise SystemExit(f"--row {name}: {error}") from None


def run_directory(out_dir: Path, name: str, seed: int | None, settings: dict | None = None) -> Path:
    """``OUT/ROW`` for the preset as it is; ``OUT/ROW-seedN`` for another seed (the spread over
    runs) and ``-FIELD=VALUE`` for each changed setting (an ablation), so none resumes another."""
    parts = [name] if seed is None else [name, f"seed{seed}"]
    parts += [f"{field}={value}" for field, value in sorted((settings or {}).items())]
    return out_dir / "-".join(parts)


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def layer_activity(model, params, images, key, batch_size=1000):
    """Per stochastic layer (z_1 first), A_u = Var_x(E_q[u]) over ``images`` (uint8, binarized
    once with ``key``), along one sampled path as in the paper's code."""
    path_of = jax.jit(model.posterior_path)
    means = [[] for _ in model.latent_sizes]
    for start in range(0, len(images), batch_size):
        batch_key = jax.random.fold_in(key, start)
        data_key, path_key = jax.random.split(batch_key)
        x = prepare(images[start : start + batch_size], "dynamic_binary", data_key)
        keys = jax.random.split(path_key, x.shape[0])
        for layer, (mean, _) in enumerate(path_of(params, x, keys)):
            means[layer].append(np.asarray(mean, np.float64))
    return [np.var(np.concatenate(m), axis=0) for m in means]


def evaluate_row(run_dir: Path, k: int, batch_size: int, key_seed: int | None = None) -> dict:
    """The paper's evaluation of a row's run: NLL (k samples), -ELBO and active units on the test
    set, drawn (binarization, samples) from ``key(key_seed)``, by default ``key(seed + 2)``."""
    run = trained.load_run(run_dir)
    source = configured.open_source(run.config)
    images = source.test_images()
    key = jax.random.key(run.config.seed + 2 if key_seed is None else key_seed)
    started = time.perf_counter()
    likelihood_input = run.config.likelihood_input
    nll = evaluate_log_likelihood(
        run.model, run.params, images, key, likelihood_input=likelihood_input, k=k, batch_size=batch_size
    )
    elbo = evaluate_elbo(
        run.model, run.params, images, jax.random.fold_in(key, 1), likelihood_input=likelihood_input,
        batch_size=batch_size,
    )
    activity = layer_activity(run.model, run.params, images, jax.random.fold_in(key, 2))
    return {
        "test_nll_nats": nll["nll_nats"],
        "test_elbo_nats": -elbo["elbo"],
        "nll_samples": k,
        "num_test_images": len(images),
        "active_units": [int(np.sum(a > ACTIVE_UNIT_THRESHOLD)) for a in activity],
        "evaluation_seconds": time.perf_counter() - started,
        "step": run.step,
    }


# Ways to run the scanned steps (steps unrolled per scan iteration, select instead of cond) that
# ``--estimate --variants`` times: they change the step's speed, never its numbers.
EXECUTION_VARIANTS = ((1, False), (1, True), (8, False), (8, True), (16, True))


def estimate(config, name: str, dispatches: int = 4, variants: bool = False) -> dict:
    """Time ``dispatches`` dispatches of the row's train step and extrapolate to its schedule;
    with ``variants``, under each of ``EXECUTION_VARIANTS`` too, the fastest one extrapolated."""
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    n = config.steps_per_dispatch
    batches = [source.train_batches(i * n, n, config.batch_size, config.seed) for i in range(dispatches + 1)]

    def seconds_per_step(**how):
        state = warm_start.initial_state(model, config, source)
        train_steps = configured.train_steps_of(model, config, **how)
        seconds = []
        for i, batch in enumerate(batches):
            tick = time.perf_counter()
            state, metrics = train_steps(state, batch)
            jax.block_until_ready(metrics)
            if i:  # the first dispatch compiles
                seconds.append((time.perf_counter() - tick) / n)
        return float(np.median(seconds))

    if variants:
        timed = {
            f"unroll={unroll},branchless={branchless}": seconds_per_step(unroll=unroll, branchless=branchless)
            for unroll, branchless in EXECUTION_VARIANTS
        }
    else:
        timed = {"backend default": seconds_per_step()}
    fastest = min(timed, key=timed.get)
    return {
        "row": name,
        "seconds_per_step": timed[fastest],
        "execution": fastest,
        "seconds_per_step_by_execution": timed,
        "steps": config.steps,
        "expected_training_hours": timed[fastest] * config.steps / 3600,
        "machine": machine(),
        "commit": commit(),
    }


def _wall(result: dict, machines: set) -> str:
    """A result's training and evaluation hours, the training split by device where it moved
    (the devices join ``machines``)."""
    hours = (result["training_seconds"] + result["evaluation_seconds"]) / 3600
    by_device = result.get("training_seconds_by_device", {})
    if len(by_device) <= 1:
        return f"{hours:.1f} h"
    machines.update(by_device)
    return f"{hours:.1f} h (training: " + ", ".join(f"{sec / 3600:.2f} h {name}" for name, sec in by_device.items()) + ")"


def report(out_dir: Path) -> str:
    lines = [
        "| row | paper NLL | this project NLL (k=5000) | -ELBO | paper active units | active units | epochs | wall (train + eval) | commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    machines = set()
    for name, row in IWAE_MNIST_ROWS.items():
        path = out_dir / name / "reproduction.json"
        if not path.is_file():
            state = "not finished, below" if (out_dir / name / "config.json").is_file() else "not run"
            lines.append(f"| {name} | {row.paper_nll:.2f} | {state} | | {row.paper_active_units or '-'} | | | | |")
            continue
        result = json.loads(path.read_text())
        machines.add(result["machine"]["processor"] + ", " + result["machine"]["device"])
        wall = _wall(result, machines)
        lines.append(
            f"| {name} | {row.paper_nll:.2f} | {result['test_nll_nats']:.2f} | {result['test_elbo_nats']:.2f} "
            f"| {row.paper_active_units or '-'} | {'+'.join(map(str, result['active_units']))} "
            f"| {result['epochs']:.0f} of {FULL_SCHEDULE_EPOCHS} | {wall} | {result['commit']} |"
        )
    others = sorted(
        path for path in out_dir.glob("*/reproduction.json") if path.parent.name not in IWAE_MNIST_ROWS
    )
    if others:
        lines += [
            "",
            "Other runs of the rows (another seed, or a setting of the preset changed):",
            "",
            "| run | row | seed | settings | paper NLL | NLL (k=5000) | -ELBO | active units | epochs | wall | commit |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    for path in others:
        result = json.loads(path.read_text())
        machines.add(result["machine"]["processor"] + ", " + result["machine"]["device"])
        settings = ", ".join(f"{field}={value}" for field, value in result.get("settings", {}).items())
        lines.append(
            f"| {path.parent.name} | {result['row']} | {result['seed']} | {settings or '-'} "
            f"| {result['paper_nll']:.2f} | {result['test_nll_nats']:.2f} | {result['test_elbo_nats']:.2f} "
            f"| {'+'.join(map(str, result['active_units']))} | {result['epochs']:.0f} of {FULL_SCHEDULE_EPOCHS} "
            f"| {_wall(result, machines)} | {result['commit']} |"
        )
    unfinished = sorted(
        path.parent
        for path in out_dir.glob("*/config.json")
        if not (path.parent / "reproduction.json").is_file() and (path.parent / "metrics.jsonl").is_file()
    )
    if unfinished:
        lines += [
            "",
            "Runs not finished (rerun their command to resume):",
            "",
            "| run | step logged | of | latest test ELBO | at step |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
    for run_dir in unfinished:
        steps = json.loads((run_dir / "config.json").read_text())["steps"]
        records = _metrics(run_dir)
        reached = max((r["step"] for r in records if "step" in r), default=0)
        tests = [r for r in records if r.get("split") == "test"]
        latest = f"{tests[-1]['elbo']:.2f} | {tests[-1]['step']:,}" if tests else "- | -"
        lines.append(f"| {run_dir.name} | {reached:,} | {steps:,} | {latest} |")
    lines.append("")
    lines.append(f"Machine: {'; '.join(sorted(machines)) or '-'}.")
    text = "\n".join(lines) + "\n"
    (out_dir / "iwae-mnist.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=["iwae-mnist"])
    parser.add_argument("--row", help=f"one of {', '.join(IWAE_MNIST_ROWS)}; with --estimate also 'all'")
    parser.add_argument("--data", default="tfds:mnist", help="idx:DIR (the MNIST idx files) or tfds:mnist")
    parser.add_argument("--out-dir", default="runs/reproduce", help="where the rows' runs and results go")
    parser.add_argument("--steps", type=int, help="a shortened schedule (default: the paper's 3280 epochs)")
    parser.add_argument(
        "--seed", type=int, help="train the row from another seed, into OUT/ROW-seedN (default: the preset's)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="train the row with a setting of its preset changed (an ablation, e.g. adam_eps=5e-6), into "
        "OUT/ROW-FIELD=VALUE; repeatable",
    )
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--eval-batch-size", type=int, default=100)
    parser.add_argument("--estimate", action="store_true", help="time the row's step; do not train")
    parser.add_argument(
        "--variants", action="store_true", help="with --estimate: time each way of running the steps too"
    )
    parser.add_argument("--report", action="store_true", help="write OUT/iwae-mnist.md from the rows run")
    parser.add_argument(
        "--eval-key",
        type=int,
        help="evaluate the row's run as it stands, its test binarization and samples drawn from this PRNG key "
        "(the spread over keys is the figure's evaluation noise); prints the result, trains nothing",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.report:
        print(report(out_dir))
        return 0
    if not args.row:
        parser.error("--row is required (or --report)")
    try:
        settings = config_lib.parse_overrides(args.set or [])
    except ValueError as error:
        parser.error(f"--set: {error}")
    if args.row == "all":
        if not args.estimate:
            parser.error("--row all: only with --estimate (each row trains with a command of its own)")
        estimates = {
            name: estimate(row_config(name, args.data, args.steps, args.seed, settings), name, variants=args.variants)
            for name in IWAE_MNIST_ROWS
        }
        print(json.dumps(estimates, indent=2))
        return 0
    config = row_config(args.row, args.data, args.steps, args.seed, settings)
    if args.estimate:
        print(json.dumps(estimate(config, args.row, variants=args.variants), indent=2))
        return 0
    run_dir = run_directory(out_dir, args.row, args.seed, settings)
    if args.eval_key is not None:
        if not (run_dir / "config.json").is_file():
            raise SystemExit(f"--eval-key: no run of {args.row} in {run_dir}")
        result = evaluate_row(run_dir, args.k, args.eval_batch_size, args.eval_key)
        print(json.dumps({"row": args.row, "key": args.eval_key, **result}, indent=2))
        return 0
    resume = (run_dir / "config.json").is_file()
    summary = runs.train(
        config, run_dir, resume=resume, progress=not args.no_progress, on_start=lambda: _record_session(run_dir)
    )
    if "interrupted_at" in summary:
        return 130
    source_size = configured.open_source(config).num_train
    result = {
        "table": "Burda et al. (2016), Table 1, MNIST",
        "row": args.row,
        **dataclasses.asdict(IWAE_MNIST_ROWS[args.row]),
        "seed": config.seed,
        "settings": settings,
        "epochs": config.steps * config.batch_size / source_size,
        "training_seconds": _training_seconds(run_dir),
        "training_seconds_by_device": _training_seconds(run_dir, by_device=True),
        **evaluate_row(run_dir, args.k, args.eval_batch_size),
        "machine": machine(),
        "commit": commit(),
        "command": "python -m benchmarks.reproduce " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    result["training_sessions"] = json.loads((run_dir / "sessions.json").read_text())
    (run_dir / "reproduction.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _record_session(run_dir: Path) -> None:
    """Append this session's commit, machine and start time to ``run_dir/sessions.json``."""
    path = run_dir / "sessions.json"
    sessions = json.loads(path.read_text()) if path.is_file() else []
    started = {"commit": commit(), "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(json.dumps([*sessions, started], indent=2) + "\n")


def _metrics(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, in order."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _training_seconds(run_dir: Path, by_device: bool = False):
    """Training wall time over every session of a resumed run (from its metrics log); with
    ``by_device``, split by the device of the session each logged stretch of steps ran in (the
    latest one started before the record was written, from ``sessions.json``)."""
    records = _metrics(run_dir)
    rates = [r for r in records if r.get("split") == "train" and "steps_per_s" in r]
    sessions_path = run_dir / "sessions.json"
    sessions = json.loads(sessions_path.read_text()) if sessions_path.is_file() else []
    starts = sorted(
        (time.mktime(time.strptime(s["time"], "%Y-%m-%d %H:%M:%S")), s["machine"]["device"]) for s in sessions
    )
    seconds = {}
    previous_step = 0
    for record in rates:
        devices = [device for started, device in starts if started <= record.get("time", math.inf)]
        device = devices[-1] if devices else "unknown"
        seconds[device] = seconds.get(device, 0.0) + (record["step"] - previous_step) / record["steps_per_s"]
        previous_step = record["step"]
    if by_device:
        return seconds
    return float(sum(seconds.values())) if seconds else math.nan


if __name__ == "__main__":
    sys.exit(main())
