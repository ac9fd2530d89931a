"""Training: resume bit-identity, the non-finite guard, learning on photos, the CLI end to end."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import checkpoints, cli, runs, training
from vae_jax import config as config_lib

TINY = dict(
    crop_size=16,
    widths=(8, 16),
    latent_channels=2,
    mixture_components=2,
    batch_size=8,
    steps=20,
    steps_per_dispatch=5,
    log_every=5,
    eval_every=10,
    checkpoint_every=10,
    eval_batch_size=64,
    grid_size=2,
)


def tiny_config(**overrides):
    return config_lib.preset("photos", {**TINY, **overrides})


def _leaves_equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


class _InterruptAt:
    """A data source that raises KeyboardInterrupt (as Ctrl-C would) when asked for ``step``."""

    def __init__(self, source, step):
        self.source, self.step = source, step

    def __getattr__(self, name):
        return getattr(self.source, name)

    def train_batches(self, start_step, *args):
        if start_step == self.step:
            self.step = None
            raise KeyboardInterrupt
        return self.source.train_batches(start_step, *args)


def test_resume_after_interrupt_is_bit_identical(tmp_path, monkeypatch):
    config = tiny_config()
    runs.train(config, tmp_path / "straight", progress=False, log=lambda *_: None)
    straight = runs.load_run(tmp_path / "straight")

    real_open = runs.open_source
    monkeypatch.setattr(runs, "open_source", lambda c, spec=None: _InterruptAt(real_open(c, spec), 10))
    summary = runs.train(config, tmp_path / "resumed", progress=False, log=lambda *_: None)
    assert summary["interrupted_at"] == 10
    assert runs.load_run(tmp_path / "resumed").state.step == 10  # the Ctrl-C checkpoint
    monkeypatch.setattr(runs, "open_source", real_open)
    runs.train(config, tmp_path / "resumed", resume=True, progress=False, log=lambda *_: None)
    resumed = runs.load_run(tmp_path / "resumed")

    assert int(resumed.state.step) == int(straight.state.step) == 20
    assert _leaves_equal(resumed.state.params, straight.state.params)
    assert _leaves_equal(resumed.state.ema_params, straight.state.ema_params)
    assert _leaves_equal(resumed.state.opt_state, straight.state.opt_state)
    for name in (
        "samples_latest.png",
        "reconstructions_latest.png",
        "curves.png",
        "metrics.jsonl",
        "summary.json",
    ):
        assert (tmp_path / "straight" / name).is_file(), name


def _state_and_batch(config):
    source = runs.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    state = training.init_state(model, config, jax.random.key(0))
    return model, state, source.train_batch(0, config.batch_size, 0)


def test_non_finite_update_is_skipped_and_counted():
    config = tiny_config()
    model, state, batch = _state_and_batch(config)
    poisoned = jax.tree_util.tree_map(lambda a: a, state.params)
    poisoned["decoder"]["out"]["bias"] = poisoned["decoder"]["out"]["bias"].at[0].set(jnp.nan)
    state = state._replace(params=poisoned)
    before = jax.tree_util.tree_map(np.asarray, state)
    new_state, metrics = training.train_step(model, config, training.make_optimizer(config), state, batch)
    assert not np.isfinite(float(metrics["loss"]))
    assert int(new_state.skipped) == 1 and int(new_state.step) == 1
    # Compare bits, not values: the poisoned NaN must come back as the very same NaN.
    assert all(
        np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
        for a, b in zip(jax.tree_util.tree_leaves(new_state.params), jax.tree_util.tree_leaves(before.params))
        if np.asarray(a).dtype == np.float32
    )
    assert _leaves_equal(new_state.opt_state, before.opt_state)


def test_gradient_norm_outliers_are_skipped():
    config = tiny_config(skip_grad_norm=1e-6)
    model, state, batch = _state_and_batch(config)
    new_state, metrics = training.train_step(model, config, training.make_optimizer(config), state, batch)
    assert float(metrics["grad_norm"]) > 1e-6 and int(new_state.skipped) == 1
    assert _leaves_equal(new_state.params, state.params)


def test_a_few_hundred_steps_on_photos_lower_the_test_loss(tmp_path):
    config = tiny_config(
        steps=300,
        steps_per_dispatch=10,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
        learning_rate=3e-3,
        warmup_steps=20,
    )
    source = runs.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    initial = training.init_state(model, config, jax.random.key(config.seed))
    test = source.test_images()
    before = runs.evaluate_elbo(model, config, initial.params, test, jax.random.key(1), 256)
    summary = runs.train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    after = summary["test"]
    assert after["bits_per_dim"] < before["bits_per_dim"] - 1.0, (before, after)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert {"step", "loss", "elbo", "kl", "bits_per_dim", "steps_per_s"} <= set(train_records[-1])


def _cli(*args):
    return cli.main([str(a) for a in args])


def test_cli_train_evaluate_sample_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = [
        x
        for key, value in TINY.items()
        for x in ("--set", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}")
    ]
    assert _cli("train", "--run-dir", run_dir, "--steps", 10, "--no-progress", *sets) == 0
    assert _cli("evaluate", run_dir, "--k", 4, "--limit", 8) == 0
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["iwae"]["k"] == 4 and report["elbo"]["num_images"] == 8
    assert report["iwae"]["nll_nats"] <= -report["elbo"]["elbo"] + 50  # IWAE-k NLL is near or below -ELBO
    assert _cli("sample", "--run", run_dir, "--num", 4, "--out-dir", tmp_path / "samples") == 0
    sample_report = json.loads((tmp_path / "samples" / "sample.json").read_text())
    assert sample_report["files"] and all(Path(f).is_file() for f in sample_report["files"])
    # An existing run is never overwritten.
    before = sorted(p.name for p in run_dir.iterdir())
    assert _cli("train", "--run-dir", run_dir, "--steps", 10, "--no-progress") == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--set", "not_a_key=1"], "unknown config key"),
        (["train", "--set", "steps=abc"], "expected a value of type"),
        (["train", "--data", "tfds:surely_not_a_dataset"], "surely_not_a_dataset"),
        (["train", "--data", "folder:/no/such/folder"], "/no/such/folder"),
        (["evaluate", "/no/such/run"], "not a run directory"),
    ],
)
def test_cli_bad_input_gives_a_clear_error(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli(*args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_checkpoint_from_another_model_or_corrupt_is_refused(tmp_path):
    config = tiny_config(steps=5, eval_every=0, checkpoint_every=0)
    runs.train(config, tmp_path / "run", progress=False, log=lambda *_: None)
    run_dir = tmp_path / "run"
    config_text = (run_dir / "config.json").read_text()
    other = dataclasses.replace(config, widths=(8, 8))
    (run_dir / "config.json").write_text(config_lib.to_json(other))
    with pytest.raises(checkpoints.CheckpointError, match="different model"):
        runs.load_run(run_dir)
    (run_dir / "config.json").write_text(config_text)
    assert int(runs.load_run(run_dir).state.step) == 5  # the refusal changed nothing on disk
    for path in (run_dir / "checkpoints").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "ocdbt" not in path.name and path.suffix != ".json":
            path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(checkpoints.CheckpointError):
        runs.load_run(run_dir)


def test_gradient_norms_far_above_their_running_mean_are_skipped():
    config = tiny_config(skip_grad_norm_factor=10.0)
    model, state, batch = _state_and_batch(config)
    optimizer = training.make_optimizer(config)
    calm = state._replace(step=jnp.int32(100), grad_norm_ema=jnp.float32(1e12))
    accepted, metrics = training.train_step(model, config, optimizer, calm, batch)
    assert int(accepted.skipped) == 0
    norm = float(metrics["grad_norm"])
    assert float(accepted.grad_norm_ema) == pytest.approx(0.98 * 1e12 + 0.02 * norm, rel=1e-6)
    spike = state._replace(step=jnp.int32(100), grad_norm_ema=jnp.float32(norm / 20))
    skipped, _ = training.train_step(model, config, optimizer, spike, batch)
    assert int(skipped.skipped) == 1 and _leaves_equal(skipped.params, spike.params)
    assert float(skipped.grad_norm_ema) == pytest.approx(norm / 20)  # outliers do not move the average
