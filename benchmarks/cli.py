"""``python -m benchmarks``: run the benchmarks on whatever ``jax.devices()`` gives, write JSON,
Markdown and a PNG of the scaling curves.

  python -m benchmarks                       # the full suite, into runs/benchmarks/BACKEND
  python -m benchmarks --quick               # a smoke run on tiny sizes
  python -m benchmarks --only train_step --model mlp-784-400-20 --batch-size 128 --seconds 10 --json out.json
  python -m benchmarks --record              # the full suite, replacing benchmarks/results/BACKEND

A run writes where the user says (``--out``), by default under ``runs/`` of the working directory
(untracked); the recorded results in the repository change only with ``--record``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

DEFAULT_OUT = Path("runs") / "benchmarks"
# The results the repository keeps, one folder a backend: replaced only by a deliberate --record.
RECORDED = Path(__file__).resolve().parent / "results"
ORDER = (
    "train_step",
    "peers",
    "encode",
    "decode",
    "elbo",
    "iwae_bound",
    "log_likelihood",
    "log_likelihood_chunks",
    "scaling_batch",
    "scaling_latent",
    "scaling_image",
    "scaling_devices",
)
ALIASES = {"iwae": "iwae_bound", "ll": "log_likelihood", "train": "train_step"}


def parse_args(argv=None):
    from benchmarks.models import MODELS

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(ORDER)}",
    )
    parser.add_argument(
        "--model", action="append", choices=sorted(MODELS), help="only this model (repeatable)"
    )
    parser.add_argument("--batch-size", type=int, help="batch size (default: the model's config)")
    parser.add_argument("--seconds", type=float, help="timed seconds per row (default 2, --quick 0.3)")
    parser.add_argument("--k", type=int, help="only this k for iwae_bound")
    parser.add_argument("--ll-images", type=int, help="test images for log_likelihood (default 10000)")
    parser.add_argument(
        "--ll-chunk-size", type=int, help="chunk size for log_likelihood (default: the library's)"
    )
    parser.add_argument(
        "--ll-budget",
        type=float,
        default=None,
        help="seconds after which a log_likelihood pass stops and projects (default 150; 0: none)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run on tiny sizes")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the networks' compute dtype (parameters stay float32); rows record it")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the rows (with the environment) to this file")
    parser.add_argument("--out", type=Path, default=None, help=f"results directory (default {DEFAULT_OUT}/BACKEND)")
    parser.add_argument("--record", action="store_true",
                        help=f"write into the repository's recorded results, {RECORDED}/BACKEND")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="write nothing to --out (only --json)")
    parser.add_argument(
        "--max-load", type=float, default=1.0, help="wait for the 1-min load average below this"
    )
    parser.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for a quiet machine")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=4.0, help="skip rows whose XLA scratch memory exceeds this"
    )
    args = parser.parse_args(argv)
    names = [ALIASES.get(n, n) for n in (args.only or ORDER)]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; expected one of {', '.join(ORDER)}")
    args.only = names
    if args.record and (args.out is not None or args.no_write or args.quick):
        parser.error("--record writes the full run to the recorded results: drop --out, --no-write and --quick")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    from benchmarks import report, suites, timing
    from benchmarks.models import Skip

    log = lambda *a: print(*a, file=sys.stderr, flush=True)
    quiet = timing.wait_for_quiet(args.max_load, 0.0 if args.quick else args.max_wait, log=log)
    env = timing.environment()
    log(
        f"vae-jax benchmarks on {env['backend']} ({env['device_kind']} x{env['device_count']}), "
        f"{env['cpu_count']} CPUs, jax {env['jax']}, commit {env['git_commit']}, load {env['load_average']}"
    )
    settings = suites.Settings(
        seconds=args.seconds if args.seconds is not None else (0.3 if args.quick else 2.0),
        quick=args.quick,
        batch_size=args.batch_size,
        k=args.k,
        ll_images=args.ll_images or (16 if args.quick else 10_000),
        ll_chunk_size=args.ll_chunk_size,
        ll_budget_s=(args.ll_budget if args.ll_budget is not None else 150.0) or None,
        memory_limit_bytes=int(args.memory_limit_gb * 2**30),
        compute_dtype=args.dtype,
        log=log,
    )
    started = time.perf_counter()
    ceilings = {
        "fp32": timing.matmul_ceiling(
            jax.numpy.float32,
            512 if args.quick else (2048 if env["backend"] == "cpu" else 8192),
            seconds=0.3 if args.quick else 1.0,
        )
    }
    if env["backend"] != "cpu" or args.dtype == "bfloat16":
        ceilings["bf16"] = timing.matmul_ceiling(jax.numpy.bfloat16, 8192 if env["backend"] != "cpu" else 2048, seconds=1.0)
    # Rows are read against the ceiling of the dtype they compute in.
    ceiling_name = "bf16" if args.dtype == "bfloat16" else "fp32"
    settings.ceiling_flop_per_s = ceilings[ceiling_name]["flop_per_s"]
    log(f"{ceiling_name} matmul ceiling: {settings.ceiling_flop_per_s / 1e9:.1f} GFLOP/s")

    rows = []
    for name in [n for n in ORDER if n in args.only]:
        fn, default_models = suites.BENCHMARKS[name]
        for model in args.model or default_models:
            tick = time.perf_counter()
            try:
                new = fn(settings, model)
            except Skip as reason:
                new = [suites.skip_row(name, model, str(reason))]
            except Exception as error:  # noqa: BLE001 -- one broken benchmark must not lose the others' results
                traceback.print_exc()
                new = [suites.skip_row(name, model, f"error: {type(error).__name__}: {error}")]
            for row in new:
                row.setdefault("backend", env["backend"])
                rows.append(row)
                log(_summary(row))
            log(f"  [{name} / {model}: {time.perf_counter() - tick:.1f} s]")

    ceilings["fp32"]["end_flop_per_s"] = timing.matmul_ceiling(
        jax.numpy.float32, ceilings["fp32"]["n"], seconds=0.3 if args.quick else 1.0
    )["flop_per_s"]
    results = {
        "schema": "vae-jax-benchmarks/1",
        "environment": env,
        "load_before": quiet["load_average"],
        "waited_for_quiet_s": quiet["waited_s"],
        "quiet": quiet["quiet"],
        "load_after": timing.load_average(),
        "ceilings": ceilings,
        "settings": {
            "seconds": settings.seconds,
            "quick": settings.quick,
            "argv": sys.argv[1:] if argv is None else list(argv),
        },
        "total_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    if not args.no_write:
        out = args.out or ((RECORDED if args.record else DEFAULT_OUT) / (env["backend"] if not args.quick else "quick"))
        for path in report.write(results, out):
            log(f"wrote {path}")
    print(report.markdown(results))
    return 0


def _summary(row):
    if "skipped" in row:
        return f"  {row['benchmark']:<22} {row['model']:<16} skipped: {row['skipped']}"
    frac = row.get("fraction_of_ceiling")
    return (
        f"  {row['benchmark']:<22} {row['model']:<16} {row['impl']:<8} B={row['batch_size']:<5} "
        f"{row['images_per_s']:>12,.1f} img/s  {row['seconds_per_call'] * 1e3:9.3f} ms/call  "
        f"compile {row['compile_s'] or 0:6.2f} s" + (f"  {100 * frac:5.1f}% ceil" if frac else "")
    )


if __name__ == "__main__":
    sys.exit(main())
