"""Training recipes compared by what they buy per CPU-minute: bits/dim on held-out photographs.

    python -m benchmarks.recipes --minutes 8 --recipes base,full-res,coupled --heldout DIR --out results.json
    python -m benchmarks.recipes --report results.json

Each recipe is a preset plus ``--set`` overrides. It first times a few dispatches of its train
step, sets ``steps`` so that training takes ``--minutes`` of wall time on this machine (the
learning-rate schedule then ends where the budget does), trains, and evaluates the ELBO in
bits/dim on the chelsea tiles and on the tiles of the photographs in ``--heldout``
(``--heldout-tiles`` of each, spread evenly through it, to bound the evaluation's cost). Results accumulate in the
JSON file (one entry per recipe and budget; a recipe already there is not run again), and
``--report`` prints them as a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from vae_jax import config as config_lib
from vae_jax import configured, photo_eval, runs, trained

# What each recipe changes, relative to its preset. Add a line to try another.
RECIPES: dict[str, tuple[str, dict]] = {
    "conv": ("photos", {}),
    "conv-dlm": ("photos", {"likelihood": "dlm"}),
    "conv-coupled": ("photos", {"likelihood": "coupled"}),
    "conv-scales": ("photos", {"scales": (1, 2, 4)}),
    "conv-coupled-scales": ("photos", {"likelihood": "coupled", "scales": (1, 2, 4)}),
    "hvae": ("photos-hvae", {}),
    "hvae-dlm": ("photos-hvae", {"likelihood": "dlm"}),
    "hvae-no-full-res": ("photos-hvae", {"groups_per_stage": (0, 2, 2)}),
    "hvae-coupled-full-res": ("photos-hvae", {"likelihood": "coupled", "groups_per_stage": (1, 2, 2), "scales": (1, 2)}),
    "hvae-coupled-scales": ("photos-hvae", {"likelihood": "coupled", "scales": (1, 2)}),
    "hvae-scales": ("photos-hvae", {"scales": (1, 2, 4)}),
    "hvae-lr3e-3": ("photos-hvae", {"learning_rate": 3e-3}),
    "hvae-lr5e-4": ("photos-hvae", {"learning_rate": 5e-4}),
    "hvae-wide": ("photos-hvae", {"widths": (48, 96, 128)}),
    "hvae-narrow": ("photos-hvae", {"widths": (24, 48, 64)}),
    "hvae-more-groups": ("photos-hvae", {"groups_per_stage": (2, 3, 3)}),
    "hvae-no-skip": ("photos-hvae", {"skip_grad_norm_factor": 0.0}),
    "hvae-batch16": ("photos-hvae", {"batch_size": 16}),
    "hvae-batch64": ("photos-hvae", {"batch_size": 64}),
    # The recipe search of the natural-image issue, each line one change on the line before it.
    "conv-32-64-128": ("photos", {"patch_size": 1, "widths": (32, 64, 128), "zooms": (), "scales": (1,), "permute_channels": False}),
    "conv-patch2": ("photos", {"zooms": (), "scales": (1,), "permute_channels": False}),
    "conv-patch2-zooms": ("photos", {"permute_channels": False}),
    "conv-patch2-zooms-permuted": ("photos", {}),
}


def steps_per_second(config) -> float:
    """The train step's rate on this machine: the median of a few dispatches after compiling."""
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    state = configured.init_state(model, config)
    train_steps = configured.train_steps_of(model, config)
    n, rates = config.steps_per_dispatch, []
    for i in range(4):
        batches = source.train_batches(i * n, n, config.batch_size, config.seed)
        tick = time.perf_counter()
        state, metrics = train_steps(state, batches)
        jax.block_until_ready(metrics)
        if i:
            rates.append(n / (time.perf_counter() - tick))
    return float(np.median(rates))


def run_recipe(name, minutes, out_dir: Path, heldout: dict, heldout_tiles: int, data: str | None = None) -> dict:
    preset, overrides = RECIPES[name]
    if data:
        overrides = {**overrides, "data": data}
    probe = config_lib.preset(preset, overrides)
    rate = steps_per_second(probe)
    steps = max(probe.steps_per_dispatch, int(rate * minutes * 60) // probe.steps_per_dispatch * probe.steps_per_dispatch)
    config = dataclasses.replace(
        probe, steps=steps, eval_every=0, checkpoint_every=max(steps // 4, 1), warmup_steps=min(probe.warmup_steps, steps // 10),
        kl_warmup_steps=min(probe.kl_warmup_steps, steps // 4),
    )  # fmt: skip
    run_dir = out_dir / f"{_label(name, data)}-{minutes}min"
    started = time.perf_counter()
    summary = runs.train(config, run_dir, resume=(run_dir / "config.json").is_file(), progress=False, log=lambda *_: None)
    train_seconds = time.perf_counter() - started
    run = trained.load_run(run_dir)
    key = jax.random.key(0)
    options = dict(likelihood_input=config.likelihood_input, batch_size=64)
    held = photo_eval.evaluate_photos(run.model, run.params, heldout, key, max_tiles=heldout_tiles, **options) if heldout else None
    return {
        "recipe": _label(name, data),
        "preset": preset,
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "minutes_budget": minutes,
        "train_seconds": train_seconds,
        "steps": steps,
        "steps_per_s": rate,
        "chelsea_elbo_bits_per_dim": summary["test"]["bits_per_dim"],
        "heldout": held,
        "machine": {"cpu_count": os.cpu_count(), "device": jax.devices()[0].device_kind},
        "commit": runs_commit(),
    }


def _label(name: str, data: str | None) -> str:
    """The recipe's name, with the training data when it is not the preset's."""
    return f"{name}@{Path(data.split(':', 1)[-1]).name}" if data else name


def runs_commit() -> str:
    from benchmarks.reproduce import commit

    return commit()


def report(path: Path) -> str:
    results = json.loads(path.read_text())
    lines = [
        "| recipe | changes | budget (min) | steps | steps/s | chelsea ELBO | held-out ELBO | held-out PNG | held-out WebP |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        held = (r.get("heldout") or {}).get("overall", {})
        lines.append(
            f"| {r['recipe']} | {r['preset']} {r['overrides'] or ''} | {r['minutes_budget']} | {r['steps']} | "
            f"{r['steps_per_s']:.2f} | {r['chelsea_elbo_bits_per_dim']:.3f} | {held.get('elbo_bits_per_dim', float('nan')):.3f} | "
            f"{held.get('png_bits_per_dim', float('nan')):.3f} | {held.get('webp_bits_per_dim', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time per recipe")
    parser.add_argument("--heldout", help="a folder of held-out photographs")
    parser.add_argument("--data", help="train every recipe on this source instead of its preset's (e.g. folder:DIR)")
    parser.add_argument("--heldout-tiles", type=int, default=256, help="about this many tiles of each held-out photo")
    parser.add_argument("--out", default="runs/recipes/results.json")
    parser.add_argument("--report", action="store_true", help="print the results file as a table")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report:
        print(report(out))
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else []
    heldout = photo_eval.folder_photos(args.heldout) if args.heldout else {}
    for name in filter(None, args.recipes.split(",")):
        if name not in RECIPES:
            raise SystemExit(f"--recipes: unknown {name!r}; expected one of {', '.join(RECIPES)}")
        if any(r["recipe"] == _label(name, args.data) and r["minutes_budget"] == args.minutes for r in results):
            continue
        result = run_recipe(name, args.minutes, out.parent, heldout, args.heldout_tiles, args.data)
        results.append(result)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("recipe", "steps", "chelsea_elbo_bits_per_dim")}), flush=True)
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
