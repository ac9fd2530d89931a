"""A training run on disk: start or resume it, train, evaluate, and load it back.

A run directory holds ``config.json``, ``checkpoints/``, ``metrics.jsonl``, PNG grids of samples
and reconstructions, ``curves.png`` and ``evaluation.json``. This module is the I/O edge
around the pure step in ``training``; it is the only one that writes into a run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoints, evaluation, objectives, outputs, parallel, training
from vae_jax import config as config_lib
from vae_jax import images as images_lib
from vae_jax.config import Config
from vae_jax.data import load_source


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists, missing, inconsistent)."""


@dataclasses.dataclass
class Run:
    directory: Path
    config: Config
    model: object
    state: training.TrainState

    @property
    def params(self):
        """The EMA parameters: what evaluation and the apps use."""
        return self.state.ema_params


def open_source(config: Config, spec: str | None = None):
    return load_source(
        spec or config.data,
        crop_size=config.crop_size,
        channels=config.channels,
        scales=config.scales,
        zooms=config.zooms,
        permute_channels=config.permute_channels,
        max_saturation=config.max_saturation,
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        download=config.download,
    )


def load_run(run_dir, step: int | None = None) -> Run:
    """Rebuild a run's model and restore its checkpoint (latest intact, or ``step``)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise RunError(f"{run_dir} is not a run directory: {config_path} is missing")
    config = config_lib.from_json_file(config_path)
    shape_path = run_dir / "data_shape.json"
    if not shape_path.is_file():
        raise RunError(f"{run_dir} has no data_shape.json: the run never started training")
    model = config_lib.build_model(config, tuple(json.loads(shape_path.read_text())))
    template = init_state(model, config)
    state = checkpoints.restore(checkpoints.manager(run_dir), template, step)
    return Run(run_dir, config, model, state)


# ---------------------------------------------------------------- what a Config makes of the training step


def loss_of(model, config: Config) -> training.LossFn:
    """The configured objective as a loss function of (params, uint8 batch, key, step)."""
    if config.objective == "iwae":
        return training.iwae_loss(model, likelihood_input=config.likelihood_input, k=config.k)
    if config.kl_estimate == "sampled":
        return training.sampled_elbo_loss(model, likelihood_input=config.likelihood_input, k=config.k)
    return training.elbo_loss(
        model, likelihood_input=config.likelihood_input, k=config.k, free_bits=config.free_bits,
        kl_warmup_steps=config.kl_warmup_steps,
    )  # fmt: skip


def optimizer_of(config: Config):
    if config.lr_schedule == "burda":
        schedule = training.burda_schedule(config.learning_rate, config.steps)
    else:
        schedule = training.cosine_schedule(
            config.learning_rate, config.steps, warmup_steps=config.warmup_steps,
            end_ratio=config.end_learning_rate_ratio,
        )  # fmt: skip
    return training.adam(
        schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
        weight_decay=config.weight_decay, grad_clip=config.grad_clip,
    )  # fmt: skip


def step_options(config: Config) -> training.StepOptions:
    return training.StepOptions(config.ema_decay, config.skip_grad_norm, config.skip_grad_norm_factor)


def train_steps_of(model, config: Config, **how):
    """The jitted multi-step train function for a configuration (``how``: ``unroll``,
    ``branchless``, see ``training.make_train_steps``)."""
    return training.make_train_steps(loss_of(model, config), optimizer_of(config), step_options(config), **how)


def init_state(model, config: Config, params=None) -> training.TrainState:
    """The training state at step 0: params from model.init (or ``params``), keys from the seed."""
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    params = model.init(init_key) if params is None else params
    return training.init_state(params, optimizer_of(config), train_key)


# Training batches the output_bias="fit" least squares reads (1280 crops at batch 32): plenty
# for the few coefficients of each channel, and a second of NumPy.
FIT_BATCHES = 40


def initial_state(model, config: Config, source) -> training.TrainState:
    """Step 0 of a run: ``model.init`` from the seed, and for ``output_bias="data_mean"`` the
    decoder's output bias at the logit of the training images' mean (Burda et al.'s code), for
    ``output_bias="fit"`` at the least-squares fit of each pixel from its likelihood's context
    over the first training batches (``vae_jax.likelihood_fit``); with ``init_from``, at another
    model's parameters (``vae_jax.warm_start``), the output bias theirs."""
    state = init_state(model, config)
    if config.init_from:
        from vae_jax import warm_start

        try:
            params = warm_start.initial_params(model, config, state.params)
        except (warm_start.WarmStartError, RunError) as error:
            raise config_lib.ConfigError("init_from", str(error).removeprefix("init_from: ")) from None
        return init_state(model, config, params)
    if config.output_bias == "zero":
        return state
    if config.output_bias == "fit":
        from vae_jax import likelihood_fit

        batches = source.train_batches(0, FIT_BATCHES, config.batch_size, config.seed)
        crops = np.asarray(batches).reshape(-1, *np.shape(batches)[2:])
        try:
            bias = likelihood_fit.fitted_output_bias(model.likelihood, crops)
            params = likelihood_fit.with_output_bias(state.params, bias)
        except ValueError as error:
            raise config_lib.ConfigError("output_bias", str(error).removeprefix("output_bias: ")) from None
        return init_state(model, config, params)
    if config.model != "stochastic_mlp":
        raise config_lib.ConfigError("output_bias", f"data_mean needs model=stochastic_mlp, got model={config.model!r}")
    from vae_jax.stochastic_mlp import with_observation_bias

    images, _ = source.train_images_and_labels()
    means = np.mean(np.asarray(images, np.float64), axis=0) / 255.0
    return init_state(model, config, with_observation_bias(model, state.params, means))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


def check_run_directory(run_dir: Path, config: Config, resume: bool) -> None:
    """Raise before anything is written unless ``run_dir`` can take this run: a new or empty
    directory, or (``resume``) a run whose saved configuration differs from ``config`` at most
    in ``steps``; either writable by this process."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run_dir: {run_dir} exists and is not a directory")
    if resume:
        if not (run_dir / "config.json").is_file():
            raise RunError(f"cannot resume: {run_dir}/config.json does not exist")
        unwritable = _first_unwritable(_written_on_resume(run_dir))
        if unwritable is not None:
            raise RunError(
                f"cannot resume {run_dir}: {unwritable} is not writable, and resuming writes the metrics log, "
                f"checkpoints and pictures there; make the run directory writable (chmod -R u+w {run_dir}) "
                f"or copy it somewhere writable"
            )
        saved = config_lib.from_json_file(run_dir / "config.json")
        changed = [
            f"{k} {getattr(saved, k)!r} -> {getattr(config, k)!r}"
            for k in config_lib.FIELD_TYPES
            if getattr(saved, k) != getattr(config, k) and k != "steps"
        ]
        if changed:
            raise RunError(f"cannot resume {run_dir} with a different config ({'; '.join(changed)}): only steps may change")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} already exists and is not empty: resume it, or choose another run directory")
    nearest = next(folder for folder in (run_dir, *run_dir.absolute().parents) if folder.exists())
    if _first_unwritable([nearest]) is not None:
        raise RunError(f"cannot create the run directory {run_dir}: {nearest} is not writable")


def _written_on_resume(run_dir: Path) -> list[Path]:
    """The folders a resumed run writes in (retention deletes inside every checkpoint's) and the
    files it rewrites in place."""
    checkpoint_folders = [p for p in (run_dir / "checkpoints").rglob("*") if p.is_dir()]
    files = [run_dir / name for name in ("metrics.jsonl", "data_shape.json", "summary.json", "curves.png")]
    pictures = [*run_dir.glob("samples_*.png"), *run_dir.glob("reconstructions_*.png")]
    return [run_dir, run_dir / "checkpoints", *checkpoint_folders, *files, *pictures]


def _first_unwritable(paths) -> Path | None:
    # os.access, not a trial write: nothing may be written before the run is known to be possible.
    return next((path for path in paths if path.exists() and not os.access(path, os.W_OK)), None)


def check_source(config: Config, source) -> None:
    """What a configuration needs of its data: a batch that fits the training set, and test images
    for the periodic evaluations."""
    if config.batch_size > source.num_train:
        raise config_lib.ConfigError(
            "batch_size", f"{source.name} has {source.num_train} training examples, fewer than one batch of {config.batch_size}"
        )
    if len(source.test_images()) == 0:
        raise config_lib.ConfigError(
            "data", f"{source.name} has no test images to evaluate on (a folder needs at least 2 images: about one in ten is held out)"
        )


def truncate_metrics(run_dir: Path, step: int, *, partial_window: bool = False) -> None:
    """Drop the metrics records past ``step`` (the restored checkpoint's): a resumed run writes
    them again, so every step is logged once. ``partial_window``: also the train record at
    ``step``, the last of a run that ended before its log window was full; the resumed run's next
    record averages the window's steps with it, as an uninterrupted run's does."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return

    def kept_record(record):
        return record["step"] < step or (record["step"] == step and not (partial_window and record["split"] == "train"))

    kept = [line for line in path.read_text().splitlines() if line.strip() and kept_record(json.loads(line))]
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(path)


def evaluate_elbo(model, params, images: np.ndarray, key, *, likelihood_input: str, batch_size: int,
                  progress=None) -> dict:  # fmt: skip
    """Mean test ELBO, KL (total and per group) and bits/dim over ``images`` (uint8);
    ``progress(n)`` is called after every batch of n images."""
    evaluate = training.make_eval_fn(model, likelihood_input)
    totals = None
    for start in range(0, len(images), batch_size):
        terms = evaluate(params, images[start : start + batch_size], jax.random.fold_in(key, start))
        if progress is not None:
            progress(len(images[start : start + batch_size]))
        sums = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64).sum(), terms)
        totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    n = len(images)
    elbo = (totals.reconstruction - totals.kl) / n
    dims = math.prod(model.data_shape)
    return {
        "elbo": float(elbo),
        "reconstruction": float(totals.reconstruction / n),
        "kl": float(totals.kl / n),
        "kl_groups": [float(g / n) for g in totals.kl_groups],
        "bits_per_dim": float(evaluation.bits_per_dim(elbo, dims, dequantized=likelihood_input == "dequantized")),
        "num_images": n,
    }


def evaluate_log_likelihood(model, params, images: np.ndarray, key, *, likelihood_input: str, k: int,
                            batch_size: int, progress=None) -> dict:  # fmt: skip
    """Importance-sampled test NLL (k samples) in nats and bits/dim, batch by batch;
    ``progress(n)`` is called after every batch of n images."""

    @jax.jit
    def batch_log_likelihood(batch, batch_key):
        data_key, sample_key = jax.random.split(batch_key)
        x = images_lib.prepare(batch, likelihood_input, data_key)
        return evaluation.log_likelihood(model, params, x, sample_key, k=k)

    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        total += float(np.sum(batch_log_likelihood(batch, jax.random.fold_in(key, start))))
        if progress is not None:
            progress(len(batch))
    mean = total / len(images)
    dims = math.prod(model.data_shape)
    bpd = evaluation.bits_per_dim(mean, dims, dequantized=likelihood_input == "dequantized")
    return {"k": k, "nll_nats": -mean, "bits_per_dim": float(bpd), "num_images": len(images)}


def write_pictures(run_dir: Path, model, params, test_images: np.ndarray, key, *, likelihood_input: str,
                   grid_size: int, tags) -> None:  # fmt: skip
    """Grids of prior samples (likelihood means) and of test images above their reconstructions."""
    sample_key, recon_key, data_key = jax.random.split(key, 3)
    means = objectives.sample(model, params, sample_key, num_samples=grid_size**2, return_mean=True)
    sample_grid = outputs.image_grid(images_lib.to_uint8(means))
    originals = test_images[: min(16, len(test_images))]
    x = images_lib.prepare(originals, likelihood_input, data_key)
    reconstructions = objectives.reconstruct(model, params, x, recon_key)
    pairs = outputs.pairs_grid(originals, images_lib.to_uint8(reconstructions))
    for tag in tags:
        images_lib.save_png(run_dir / f"samples_{tag}.png", sample_grid, 3)
        images_lib.save_png(run_dir / f"reconstructions_{tag}.png", pairs, 3)


def train(
    config: Config, run_dir, *, resume: bool = False, progress: bool = True, log=print, devices: int = 1,
    on_start=None,
) -> dict:
    """Train (or resume) a run; checkpoints periodically, at the end and on Ctrl-C.

    ``on_start()``, if given, is called once the run directory is ready, before the first step.

    ``devices`` > 1 (0: all) trains data-parallel over a mesh of that many devices: the same
    global batch, split by rows, with replicated parameters (see ``vae_jax.parallel``).
    """
    run_dir = Path(run_dir)
    # In a multi-process job every process trains; process 0 alone writes files and evaluates.
    primary = parallel.is_primary()
    # Everything that can be wrong is checked before the run directory is touched.
    config_lib.validate(config)
    check_run_directory(run_dir, config, resume)
    source = open_source(config)
    check_source(config, source)
    model = config_lib.build_model(config, source.image_shape)
    state = initial_state(model, config, source)
    no_room = checkpoints.room_problem(run_dir / "checkpoints", state)
    if no_room is not None:
        raise checkpoints.CheckpointWriteError(f"cannot train in {run_dir}: {no_room}; nothing was written")
    window = _empty_window(0)
    if resume:
        manager = checkpoints.manager(run_dir)
        if manager.latest_step() is not None:
            state = checkpoints.restore(manager, state, warn=log)
        if int(state.step) >= config.steps:
            raise RunError(
                f"{run_dir} is already at step {int(state.step)}: steps={config.steps} leaves nothing to train "
                f"(give more steps to continue it)"
            )
        checkpoints.set_aside_newer(manager, int(state.step), log=log)
        saved_window = checkpoints.extra(manager, int(state.step)) if int(state.step) > 0 else None
        if primary:
            truncate_metrics(run_dir, int(state.step), partial_window=bool(saved_window and saved_window["count"]))
        window = _resumed_window(saved_window, run_dir, int(state.step))
    else:
        # Every process has checked the directory before any of them writes to it.
        parallel.barrier("vae-jax: run directory checked")
        if primary:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(config_lib.to_json(config) + "\n")
        manager = checkpoints.manager(run_dir)
    if primary:
        _write_json(run_dir / "data_shape.json", list(source.image_shape))
    if on_start is not None:
        on_start()
    start = int(state.step)
    mesh = parallel.make_mesh(devices) if devices != 1 else None
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    log(
        f"vae-jax: {config.model} VAE on {source.name} {source.image_shape}, steps {start}->{config.steps}, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind} x{mesh.size if mesh else 1}), "
        f"run dir {run_dir}"
    )
    train_steps = train_steps_of(model, config)
    test_images = source.test_images()
    eval_key = jax.random.key(config.seed + 1)
    bar = _progress_bar(progress, start, config.steps)
    rate = {"steps": 0, "time": 0.0}  # the timed dispatches since the last record
    summary = {"start_step": start}
    interrupted = None
    began = time.perf_counter()
    skipped_streak = 0

    def next_batches(step):
        n = min(config.steps_per_dispatch, config.steps - step)
        batches = source.train_batches(step, n, config.batch_size, config.seed, config.reshuffle)
        return batches if mesh is None else parallel.shard_batches(batches, mesh)

    stop = _StopRequest()
    previous_handlers = stop.install()
    try:
        step = start
        batches = next_batches(step)
        tick = time.perf_counter()
        while step < config.steps:
            n = len(batches)
            state, metrics = train_steps(state, batches)
            # The step runs asynchronously: the host cuts the next batches meanwhile.
            if step + n < config.steps:
                batches = next_batches(step + n)
            metrics = parallel.host_copy(metrics)
            elapsed = time.perf_counter() - tick
            if step == start:
                summary["first_dispatch_seconds"] = elapsed  # includes compilation
            else:
                rate["steps"] += n
                rate["time"] += elapsed
            for name, values in metrics.items():
                window["sums"][name] = window["sums"].get(name, 0.0) + float(np.sum(values))
            window["count"] += n
            window["step"] = step + n
            skipped_streak = _skipped_streak(skipped_streak, metrics["skipped"])
            _check_progress(state, metrics, skipped_streak, step + n, manager)
            step += n
            if bar is not None:
                bar.update(n)
            full_window = _crossed(step, n, config.log_every)
            if full_window or step == config.steps:
                record = _train_record(step, window, rate, config, int(parallel.host_copy(state.skipped)))
                if primary:
                    _append_metrics(run_dir, record)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.1f}",
                        bpd=f"{record['bits_per_dim']:.3f}",
                        img_s=f"{record.get('images_per_s', 0):.0f}",
                    )
                rate = {"steps": 0, "time": 0.0}
                if full_window:  # a run's last, partial, window goes on with it when it is resumed
                    window = _empty_window(step)
            if _crossed(step, n, config.checkpoint_every):
                checkpoints.save(manager, state, extra=window)
            if _crossed(step, n, config.eval_every) and step < config.steps and primary:
                _evaluate_and_draw(run_dir, model, config, parallel.host_copy(state), test_images, eval_key, step)
            tick = time.perf_counter()  # the rate counts the steps, not the evaluations and checkpoints
            if stop.signal is not None:
                break
        interrupted = stop.signal
    except KeyboardInterrupt:  # a second Ctrl-C, or a Ctrl-C raised outside the main thread's handler
        interrupted = "SIGINT"
        if _donated(state):
            # Raised inside a dispatch, after its input buffers were given to the step: what was
            # saved last is all there is.
            log(f"\n{interrupted} during a dispatch: the run stands at its last checkpoint")
            summary.update(interrupted_at=manager.latest_step(), signal=interrupted)
            return summary
    finally:
        if bar is not None:
            bar.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    if interrupted:
        log(f"\n{interrupted} at step {int(parallel.host_copy(state.step))}: saving a checkpoint")
    state = parallel.host_copy(state)
    # A KeyboardInterrupt between a dispatch and the window's update leaves the window behind.
    checkpoints.save(manager, state, extra=window if window["step"] == int(state.step) else None)
    summary["wall_seconds"] = time.perf_counter() - began
    if interrupted:
        summary["interrupted_at"] = int(state.step)
        summary["signal"] = interrupted
        return summary
    summary.update(final_step=int(state.step), skipped_updates=int(state.skipped))
    if not primary:
        return summary
    final = _evaluate_and_draw(run_dir, model, config, state, test_images, eval_key, int(state.step))
    summary["test"] = final
    train_records = [r for r in outputs.read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "train"]
    rates = [r["steps_per_s"] for r in train_records if "steps_per_s" in r]
    if rates:
        summary["steps_per_s"] = float(np.median(rates))
    _write_json(run_dir / "summary.json", summary)
    log(
        f"done: test bits/dim {final['bits_per_dim']:.4f} (ELBO, EMA params, {final['num_images']} images), "
        f"{summary['wall_seconds']:.0f} s wall, {summary.get('steps_per_s', float('nan')):.1f} steps/s"
    )
    return summary


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (what schedulers send) during training: the loop stops after the
    dispatch in flight and saves a checkpoint. An exception raised from the handler could land
    between a dispatch's return and the assignment of its result, losing the new state while the
    old one's buffers are already donated to the step; so the handler only records the signal. A
    second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def install(self) -> dict:
        """Handle SIGINT and SIGTERM; returns the handlers to put back (none outside the main thread)."""
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, self)
            except ValueError:  # not the main thread: signals stay as they were
                break
        return previous


def _donated(state) -> bool:
    """Whether any of ``state``'s arrays was deleted (donated to a dispatch that never returned)."""
    return any(getattr(leaf, "is_deleted", lambda: False)() for leaf in jax.tree_util.tree_leaves(state))


# Consecutive skipped updates after which a run is stopped: no step is being taken.
MAX_SKIPPED_STREAK = 20


def _skipped_streak(streak, skipped_per_step):
    for skipped in np.asarray(skipped_per_step).reshape(-1):
        streak = streak + 1 if skipped else 0
    return streak


@jax.jit
def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def _check_progress(state, metrics, skipped_streak, step, manager):
    """Stop a run that no longer learns: non-finite parameters, or ``MAX_SKIPPED_STREAK`` updates
    in a row skipped; the checkpoints on disk (all from before) stay as they are."""
    last = manager.latest_step()
    intact = f"the last checkpoint (step {last}) is intact" if last is not None else "no checkpoint was written"
    if not bool(parallel.host_copy(_all_finite(state.params))):
        raise RunError(f"training stopped at step {step}: the parameters became non-finite; {intact}; "
                       f"lower learning_rate or set grad_clip")  # fmt: skip
    if skipped_streak >= MAX_SKIPPED_STREAK:
        finite_loss = np.all(np.isfinite(metrics["loss"])) and np.all(np.isfinite(metrics["grad_norm"]))
        why = "gradient norms far above their running mean" if finite_loss else "a non-finite loss or gradient"
        raise RunError(f"training stopped at step {step}: the last {skipped_streak} updates were all skipped for "
                       f"{why}; {intact}; lower learning_rate")  # fmt: skip


def _progress_bar(enabled, start, total):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)


def _crossed(step, n, every):
    return every > 0 and step // every > (step - n) // every


def _empty_window(step: int) -> dict:
    """The running sums of the train metrics over the ``count`` steps of the log window up to
    ``step``: what the next train record averages, saved with each checkpoint so that a resumed
    run logs what an uninterrupted one does."""
    return {"step": step, "count": 0, "sums": {}}


def _resumed_window(saved, run_dir: Path, step: int) -> dict:
    """The log window a run resumed at ``step`` goes on with: the one saved with its checkpoint;
    else (a checkpoint from before windows were saved) an empty one, marked ``from_step`` when
    steps since the last train record are missing from it."""
    if saved is not None:
        return saved
    log = run_dir / "metrics.jsonl"
    logged = [r["step"] for r in outputs.read_metrics(log) if r.get("split") == "train"] if log.is_file() else []
    return {**_empty_window(step), "from_step": step} if step > max(logged, default=0) else _empty_window(step)


def _train_record(step, window, rate, config, skipped_total):
    count = max(window["count"], 1)
    record = {"split": "train", "step": step, "time": time.time()}
    if "from_step" in window:
        record["from_step"] = window["from_step"]  # the mean is over the steps after it only
    for name, total in window["sums"].items():
        record[name] = total / count if name != "skipped" else int(total)
    record["skipped_total"] = skipped_total
    if rate["time"] > 0:
        record["steps_per_s"] = rate["steps"] / rate["time"]
        record["images_per_s"] = record["steps_per_s"] * config.batch_size
    return record


def _evaluate_and_draw(run_dir, model, config, state, test_images, key, step):
    result = evaluate_elbo(
        model, state.ema_params, test_images, key, likelihood_input=config.likelihood_input,
        batch_size=config.eval_batch_size,
    )  # fmt: skip
    _append_metrics(run_dir, {"split": "test", "step": step, **result})
    tags = (f"{step:06d}", "latest")
    write_pictures(
        run_dir, model, state.ema_params, test_images, jax.random.fold_in(key, step),
        likelihood_input=config.likelihood_input, grid_size=config.grid_size, tags=tags,
    )  # fmt: skip
    outputs.plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return result
