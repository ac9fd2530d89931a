"""A training run on disk: start or resume it, and train it.

A run directory holds ``config.json``, ``data_shape.json``, ``checkpoints/``, ``metrics.jsonl``,
PNG grids of samples and reconstructions, ``curves.png`` and ``summary.json``. This module is the
I/O edge around the pure step in ``training`` and the only one that writes those files;
``vae_jax.trained`` reads a run back, ``vae_jax.configured`` says what a configuration makes of
the step, ``vae_jax.warm_start`` where a run starts.

``train`` checks everything it can before the directory is touched, creates or resumes it, then
dispatches ``steps_per_dispatch`` steps at a time (``_dispatch_loop``). After each dispatch the
metrics join the log window (``_account``), a train record is written when a window closes
(``_close_window``), a checkpoint and an evaluation when their periods come round
(``_periodic_actions``); a signal stops the loop after the dispatch in flight, with a checkpoint.
The finished run's EMA parameters are evaluated on the test images (``_final_evaluation``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import checkpoints, configured, dataset_evaluation, outputs, parallel, warm_start
from vae_jax import config as config_lib
from vae_jax import images as images_lib
from vae_jax.config import Config


class RunError(ValueError):
    """A run directory that cannot be trained in as asked (exists, missing, inconsistent), or a
    run that stopped learning."""


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


def train(
    config: Config, run_dir, *, resume: bool = False, progress: bool = True, log=print, devices: int = 1,
    on_start=None,
) -> dict:
    """Train (or resume) a run; checkpoints periodically, at the end and on Ctrl-C.

    ``on_start()``, if given, is called once the run directory is ready, before the first step.

    ``devices`` > 1 (0: all) trains data-parallel over a mesh of that many devices: the same
    global batch, split by rows, with replicated parameters (see ``vae_jax.parallel``). In a
    multi-process job every process trains; process 0 alone writes files and evaluates.
    """
    run_dir = Path(run_dir)
    source, model, state = _checked_start(config, run_dir, resume)
    if resume:
        manager, state, window = _resumed(run_dir, config, state, log)
    else:
        manager, window = _created(run_dir, config), _empty_window(0)
    if parallel.is_primary():
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
    run = _Training(run_dir, config, model, source, manager, mesh, source.test_images(), jax.random.key(config.seed + 1))
    summary = {"start_step": start}
    began = time.perf_counter()
    state, window, interrupted = _dispatch_loop(run, state, window, summary, progress)
    if interrupted and _donated(state):
        # A second Ctrl-C inside a dispatch, after its input buffers were given to the step: what
        # was saved last is all there is.
        log(f"\n{interrupted} during a dispatch: the run stands at its last checkpoint")
        summary.update(interrupted_at=manager.latest_step(), signal=interrupted)
        return summary
    state = _save_at_exit(manager, state, window, interrupted, log)
    summary["wall_seconds"] = time.perf_counter() - began
    if interrupted:
        summary.update(interrupted_at=int(state.step), signal=interrupted)
        return summary
    summary.update(final_step=int(state.step), skipped_updates=int(state.skipped))
    return _final_evaluation(run, state, summary, log) if parallel.is_primary() else summary


def _save_at_exit(manager, state, window: dict, interrupted: str | None, log):
    """The checkpoint a run ends on, finished or stopped by a signal; the state, on this host."""
    if interrupted:
        log(f"\n{interrupted} at step {int(parallel.host_copy(state.step))}: saving a checkpoint")
    state = parallel.host_copy(state)
    # A KeyboardInterrupt between a dispatch and the window's update leaves the window behind.
    checkpoints.save(manager, state, extra=window if window["step"] == int(state.step) else None)
    return state


def _checked_start(config: Config, run_dir: Path, resume: bool):
    """``(source, model, state at step 0)`` of a run, once everything that can be wrong is
    checked, before the run directory is touched."""
    config_lib.validate(config)
    check_run_directory(run_dir, config, resume)
    source = configured.open_source(config)
    check_source(config, source)
    model = config_lib.build_model(config, source.image_shape)
    state = warm_start.initial_state(model, config, source)
    no_room = checkpoints.room_problem(run_dir / "checkpoints", state)
    if no_room is not None:
        raise checkpoints.CheckpointWriteError(f"cannot train in {run_dir}: {no_room}; nothing was written")
    return source, model, state


def _created(run_dir: Path, config: Config):
    """A new run directory holding ``config.json``; its checkpoint manager."""
    # Every process has checked the directory before any of them writes to it.
    parallel.barrier("vae-jax: run directory checked")
    if parallel.is_primary():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config_lib.to_json(config) + "\n")
    return checkpoints.manager(run_dir)


def _resumed(run_dir: Path, config: Config, state, log):
    """``(manager, state, window)`` of a run taken up again: the state of its latest intact
    checkpoint (``state`` when none was written) and the log window saved with it; the
    checkpoints after it set aside, the metrics log cut back to its step."""
    manager = checkpoints.manager(run_dir)
    if manager.latest_step() is not None:
        state = checkpoints.restore(manager, state, warn=log)
    step = int(state.step)
    if step >= config.steps:
        raise RunError(
            f"{run_dir} is already at step {step}: steps={config.steps} leaves nothing to train "
            f"(give more steps to continue it)"
        )
    checkpoints.set_aside_newer(manager, step, log=log)
    saved_window = checkpoints.extra(manager, step) if step > 0 else None
    if parallel.is_primary():
        truncate_metrics(run_dir, step, partial_window=bool(saved_window and saved_window["count"]))
    return manager, state, _resumed_window(saved_window, run_dir, step)


@dataclasses.dataclass(frozen=True)
class _Training:
    """What every part of the loop reads, fixed for one call to ``train``."""

    run_dir: Path
    config: Config
    model: object
    source: object
    manager: object
    mesh: object  # None: one device
    test_images: np.ndarray
    eval_key: object


@dataclasses.dataclass
class _Logbook:
    """What the loop counts between train records: the log window (see ``_empty_window``), the
    timed dispatches since the last record, and the updates skipped in a row."""

    window: dict
    rate: dict = dataclasses.field(default_factory=lambda: {"steps": 0, "time": 0.0})
    skipped_streak: int = 0


def _dispatch_loop(run: _Training, state, window: dict, summary: dict, progress: bool):
    """Dispatch the train steps from ``state`` up to ``config.steps``, or until a signal asks to
    stop; returns ``(state, window, the signal's name or None)``. After a second Ctrl-C (a
    ``KeyboardInterrupt``) the state may be the one donated to the dispatch it cut short."""
    config, logbook = run.config, _Logbook(window)
    train_steps = configured.train_steps_of(run.model, config)
    start = step = int(parallel.host_copy(state.step))
    bar = _progress_bar(progress, start, config.steps)
    stop = _StopRequest()
    previous_handlers = stop.install()
    try:
        batches = _next_batches(run, step)
        tick = time.perf_counter()
        while step < config.steps:
            n = len(batches)
            state, metrics = train_steps(state, batches)
            # The step runs asynchronously: the host cuts the next batches meanwhile.
            if step + n < config.steps:
                batches = _next_batches(run, step + n)
            metrics = parallel.host_copy(metrics)
            _account(logbook, summary, metrics, step, n, time.perf_counter() - tick, first=step == start)
            _check_progress(state, metrics, logbook.skipped_streak, step + n, run.manager)
            step += n
            if bar is not None:
                bar.update(n)
            _close_window(run, logbook, state, step, n, bar)
            _periodic_actions(run, state, logbook.window, step, n)
            tick = time.perf_counter()  # the rate counts the steps, not the evaluations and checkpoints
            if stop.signal is not None:
                break
        return state, logbook.window, stop.signal
    except KeyboardInterrupt:  # a second Ctrl-C, or a Ctrl-C raised outside the main thread's handler
        return state, logbook.window, "SIGINT"
    finally:
        if bar is not None:
            bar.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _next_batches(run: _Training, step: int):
    """The batches of the dispatch from ``step`` (``steps_per_dispatch``, fewer at the end), split over the mesh."""
    config = run.config
    n = min(config.steps_per_dispatch, config.steps - step)
    batches = run.source.train_batches(step, n, config.batch_size, config.seed, config.reshuffle)
    return batches if run.mesh is None else parallel.shard_batches(batches, run.mesh)


def _account(logbook: _Logbook, summary: dict, metrics: dict, step: int, n: int, elapsed: float, *, first: bool):
    """Add the dispatch of steps ``step + 1 .. step + n`` to the log window and to the timing; the
    first dispatch of a call, which compiles, is timed apart."""
    if first:
        summary["first_dispatch_seconds"] = elapsed
    else:
        logbook.rate["steps"] += n
        logbook.rate["time"] += elapsed
    window = logbook.window
    for name, values in metrics.items():
        window["sums"][name] = window["sums"].get(name, 0.0) + float(np.sum(values))
    window["count"] += n
    window["step"] = step + n
    logbook.skipped_streak = _skipped_streak(logbook.skipped_streak, metrics["skipped"])


def _close_window(run: _Training, logbook: _Logbook, state, step: int, n: int, bar) -> None:
    """At the end of a log window, or of the run, the train record of the window's means; a run's
    last, partial, window goes on with it when it is resumed."""
    full_window = _crossed(step, n, run.config.log_every)
    if not (full_window or step == run.config.steps):
        return
    record = _train_record(step, logbook.window, logbook.rate, run.config, int(parallel.host_copy(state.skipped)))
    if parallel.is_primary():
        _append_metrics(run.run_dir, record)
    if bar is not None:
        scores = (
            {"bpp": f"{record['bits_per_pixel']:.3f}", "dB": f"{record['psnr']:.2f}"}
            if "bits_per_pixel" in record else {"bpd": f"{record['bits_per_dim']:.3f}"}
        )  # fmt: skip
        bar.set_postfix(loss=f"{record['loss']:.3f}", **scores, img_s=f"{record.get('images_per_s', 0):.0f}")
    logbook.rate = {"steps": 0, "time": 0.0}
    if full_window:
        logbook.window = _empty_window(step)


def _periodic_actions(run: _Training, state, window: dict, step: int, n: int) -> None:
    """A checkpoint (with the log window) every ``checkpoint_every`` steps, an evaluation with
    pictures every ``eval_every`` (the final one is ``_final_evaluation``'s)."""
    if _crossed(step, n, run.config.checkpoint_every):
        checkpoints.save(run.manager, state, extra=window)
    if _crossed(step, n, run.config.eval_every) and step < run.config.steps and parallel.is_primary():
        _evaluate_and_draw(run, parallel.host_copy(state), step)


def _final_evaluation(run: _Training, state, summary: dict, log) -> dict:
    """The finished run's test ELBO and pictures, its median rate, ``summary.json``; the summary."""
    final = _evaluate_and_draw(run, state, int(state.step))
    summary["test"] = final
    train_records = [r for r in outputs.read_metrics(run.run_dir / "metrics.jsonl") if r.get("split") == "train"]
    rates = [r["steps_per_s"] for r in train_records if "steps_per_s" in r]
    if rates:
        summary["steps_per_s"] = float(np.median(rates))
    _write_json(run.run_dir / "summary.json", summary)
    scored = (
        f"test {final['bits_per_pixel']:.4f} bits/pixel at {final['psnr']:.2f} dB (rounded latents"
        if run.config.model == "hyperprior" else f"test bits/dim {final['bits_per_dim']:.4f} (ELBO"
    )  # fmt: skip
    log(
        f"done: {scored}, EMA params, {final['num_images']} images), "
        f"{summary['wall_seconds']:.0f} s wall, {summary.get('steps_per_s', float('nan')):.1f} steps/s"
    )
    return summary


def _evaluate_and_draw(run: _Training, state, step: int) -> dict:
    """The EMA parameters' test ELBO, logged, and pictures tagged with the step and ``latest``."""
    config = run.config
    if config.model == "hyperprior":
        return _evaluate_codec(run, state, step)
    result = dataset_evaluation.evaluate_elbo(
        run.model, state.ema_params, run.test_images, run.eval_key, likelihood_input=config.likelihood_input,
        batch_size=config.eval_batch_size,
    )  # fmt: skip
    _append_metrics(run.run_dir, {"split": "test", "step": step, **result})
    outputs.write_pictures(
        run.run_dir, run.model, state.ema_params, run.test_images, jax.random.fold_in(run.eval_key, step),
        likelihood_input=config.likelihood_input, grid_size=config.grid_size, tags=(f"{step:06d}", "latest"),
    )  # fmt: skip
    outputs.plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
    return result


def _evaluate_codec(run: _Training, state, step: int) -> dict:
    """A lossy codec's test rate and distortion (latents rounded), logged, and its test crops above
    their reconstructions, tagged with the step and ``latest``."""
    from vae_jax import rate_distortion

    config = run.config
    result = dataset_evaluation.evaluate_rate_distortion(
        run.model, state.ema_params, run.test_images, batch_size=config.eval_batch_size, lmbda=config.rd_lambda
    )
    _append_metrics(run.run_dir, {"split": "test", "step": step, **result})
    originals = run.test_images[: min(16, len(run.test_images))]
    x = np.asarray(originals, np.float32) / 255.0
    reconstructions = rate_distortion.quantized_terms(run.model, state.ema_params, x).reconstruction
    pairs = outputs.pairs_grid(originals, images_lib.to_uint8(np.clip(np.asarray(reconstructions), 0, 1)))
    for tag in (f"{step:06d}", "latest"):
        images_lib.save_png(run.run_dir / f"reconstructions_{tag}.png", pairs, 2)
    outputs.plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
    return result


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
