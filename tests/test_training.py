"""The pure train step (skipping non-finite and outlier updates, the EMA), the losses it takes,
the learning-rate schedules, and that a few hundred steps learn."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quiet, tiny_conv_config, tiny_run_config

from vae_jax import config as config_lib
from vae_jax import configured, runs, training
from vae_jax.dataset_evaluation import evaluate_elbo


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _setup(config):
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    return model, configured.init_state(model, config), source.train_batch(0, config.batch_size, 0)


def _step(model, config, state, batch):
    loss_fn, optimizer, options = configured.loss_of(model, config), configured.optimizer_of(config), configured.step_options(config)
    # Jitted: op by op, a convolutional train step compiles every primitive on its own (a minute).
    return jax.jit(lambda s, b: training.train_step(loss_fn, optimizer, s, b, options))(state, batch)


def test_non_finite_update_is_skipped_and_counted():
    config = tiny_conv_config()
    model, state, batch = _setup(config)
    poisoned = jax.tree_util.tree_map(lambda a: a, state.params)
    poisoned["decoder"]["out"]["bias"] = poisoned["decoder"]["out"]["bias"].at[0].set(jnp.nan)
    state = state._replace(params=poisoned)
    before = jax.tree_util.tree_map(np.asarray, state)
    new_state, metrics = _step(model, config, state, batch)
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
    config = tiny_conv_config(skip_grad_norm=1e-6)
    model, state, batch = _setup(config)
    new_state, metrics = _step(model, config, state, batch)
    assert float(metrics["grad_norm"]) > 1e-6 and int(new_state.skipped) == 1
    assert _leaves_equal(new_state.params, state.params)


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_gradient_norms_far_above_their_running_mean_are_skipped():
    config = tiny_conv_config(skip_grad_norm_factor=10.0)
    model, state, batch = _setup(config)
    calm = state._replace(step=jnp.int32(100), grad_norm_ema=jnp.float32(1e12))
    accepted, metrics = _step(model, config, calm, batch)
    assert int(accepted.skipped) == 0
    norm = float(metrics["grad_norm"])
    assert float(accepted.grad_norm_ema) == pytest.approx(0.98 * 1e12 + 0.02 * norm, rel=1e-6)
    spike = state._replace(step=jnp.int32(100), grad_norm_ema=jnp.float32(norm / 20))
    skipped, _ = _step(model, config, spike, batch)
    assert int(skipped.skipped) == 1 and _leaves_equal(skipped.params, spike.params)
    # An outlier pulls the average only as far as the threshold it broke: 0.98 m + 0.02 * 10 m.
    assert float(skipped.grad_norm_ema) == pytest.approx(norm / 20 * (0.98 + 0.02 * 10.0), rel=1e-6)
    # Norms that really grew tenfold and stay there are caught up with before 20 skips in a row.
    streak = spike._replace(grad_norm_ema=jnp.float32(norm / 10.5))
    for skips in range(1, 20):
        streak, step_metrics = _step(model, config, streak, batch)
        if int(step_metrics["skipped"]) == 0:
            break
    assert skips < 20 and int(streak.skipped) == skips - 1


def test_ema_off_evaluates_the_parameters_themselves():
    config = tiny_conv_config(ema_decay=0.0, warmup_steps=0)
    model, state, batch = _setup(config)
    new_state, _ = _step(model, config, state, batch)
    assert _leaves_equal(new_state.ema_params, new_state.params)
    assert not _leaves_equal(new_state.params, state.params)


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_kl_warmup_weights_the_kl_and_free_bits_floor_it():
    """The ELBO loss is -mean(reconstruction - beta * sum_g max(free_bits, KL_g)), beta = step / warm-up."""
    config = tiny_conv_config(kl_warmup_steps=10, free_bits=0.5)
    model, state, batch = _setup(config)
    loss_fn = configured.loss_of(model, config)
    key = jax.random.key(3)
    loss, metrics = loss_fn(state.params, batch, key, jnp.int32(4))
    assert float(metrics["beta"]) == pytest.approx(0.4)
    data_key, elbo_key = jax.random.split(key)
    from vae_jax import images, objectives

    terms = objectives.elbo_terms(model, state.params, images.prepare(batch, config.likelihood_input, data_key), elbo_key)
    floored = sum(jnp.maximum(kl, 0.5) for kl in terms.kl_groups)
    assert float(loss) == pytest.approx(float(-jnp.mean(terms.reconstruction - 0.4 * floored)), rel=1e-6)


def test_burda_schedule_stages():
    """3^i / 3280 of the steps at 1e-3 * 10^(-i/7): on 3280 steps, stage i is exactly 3^i steps."""
    schedule = training.burda_schedule(1e-3, 3280)
    values = np.asarray(jax.vmap(schedule)(jnp.arange(3280)))
    boundaries = np.cumsum([3**i for i in range(8)])
    for i, end in enumerate(boundaries):
        np.testing.assert_allclose(values[end - 3**i : end], 1e-3 * 10 ** (-i / 7), rtol=1e-6)


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_a_few_hundred_steps_on_photos_lower_the_test_loss(tmp_path):
    config = tiny_conv_config(
        steps=300, steps_per_dispatch=1, eval_every=0, checkpoint_every=0, log_every=100, learning_rate=3e-3,
        warmup_steps=20,
    )  # fmt: skip
    source = configured.open_source(config)
    model = config_lib.build_model(config, source.image_shape)
    initial = configured.init_state(model, config)
    test = source.test_images()
    before = evaluate_elbo(
        model, initial.params, test, jax.random.key(1), likelihood_input=config.likelihood_input, batch_size=256
    )
    summary = runs.train(config, tmp_path / "run", progress=False, log=quiet)
    after = summary["test"]
    assert after["bits_per_dim"] < before["bits_per_dim"] - 1.0, (before, after)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert {"step", "loss", "elbo", "kl", "bits_per_dim", "steps_per_s"} <= set(train_records[-1])


def _run_steps(config, state, batches, **how):
    model = config_lib.build_model(config, configured.open_source(config).image_shape)
    train_steps = training.make_train_steps(
        configured.loss_of(model, config), configured.optimizer_of(config), configured.step_options(config), **how
    )
    return train_steps(jax.tree_util.tree_map(jnp.copy, state), batches)


def test_unrolled_branchless_steps_compute_what_the_scanned_conds_compute():
    # A threshold between the steps' gradient norms, so that some updates are skipped and some
    # taken: the select must keep the old state exactly where the cond skipped.
    steps = 8
    probe = tiny_run_config()
    source = configured.open_source(probe)
    model = config_lib.build_model(probe, source.image_shape)
    state = configured.init_state(model, probe)
    batches = source.train_batches(0, steps, probe.batch_size, 0)
    _, metrics = _run_steps(probe, state, batches, unroll=1, branchless=False)
    config = tiny_run_config(skip_grad_norm=float(np.median(metrics["grad_norm"])))
    reference, reference_metrics = _run_steps(config, state, batches, unroll=1, branchless=False)
    assert 0 < int(reference.skipped) < steps
    for unroll, branchless in [(4, True), (3, False)]:  # unrolled with the select; unrolled, a ragged last group
        other, other_metrics = _run_steps(config, state, batches, unroll=unroll, branchless=branchless)
        assert int(other.skipped) == int(reference.skipped)
        np.testing.assert_array_equal(other_metrics["skipped"], reference_metrics["skipped"])
        for a, b in zip(jax.tree_util.tree_leaves(other), jax.tree_util.tree_leaves(reference)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
