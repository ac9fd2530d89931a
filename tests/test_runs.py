"""Run directories: what resuming may change, settings checked before anything is written,
signals, a metrics log without duplicates that a resume leaves as an uninterrupted run writes it,
runs that stop learning, damaged checkpoints set aside, and read-only or full disks refused."""

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_RUN, quiet, tiny_conv_config, tiny_run_config

from vae_jax import checkpoints, configured, runs, trained
from vae_jax import config as config_lib
from vae_jax.config import ConfigError


def _train(config, run_dir, **kwargs):
    return runs.train(config, run_dir, progress=False, log=quiet, **kwargs)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


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


@pytest.mark.parametrize(
    "make_config", [tiny_run_config, pytest.param(tiny_conv_config, marks=pytest.mark.slow)], ids=["mlp", "conv"]
)
def test_resume_after_interrupt_is_bit_identical(tmp_path, monkeypatch, make_config):
    config = make_config()
    _train(config, tmp_path / "straight")
    straight = trained.load_run(tmp_path / "straight")
    real_open = configured.open_source
    monkeypatch.setattr(configured, "open_source", lambda c, spec=None: _InterruptAt(real_open(c, spec), 10))
    summary = _train(config, tmp_path / "resumed")
    assert summary["interrupted_at"] == 10
    assert trained.load_run(tmp_path / "resumed").state.step == 10  # the Ctrl-C checkpoint
    monkeypatch.setattr(configured, "open_source", real_open)
    _train(config, tmp_path / "resumed", resume=True)
    resumed = trained.load_run(tmp_path / "resumed")
    assert int(resumed.state.step) == int(straight.state.step) == 20
    assert _leaves_equal(resumed.state.params, straight.state.params)
    assert _leaves_equal(resumed.state.ema_params, straight.state.ema_params)
    assert _leaves_equal(resumed.state.opt_state, straight.state.opt_state)
    for name in ("samples_latest.png", "reconstructions_latest.png", "curves.png", "metrics.jsonl", "summary.json"):
        assert (tmp_path / "straight" / name).is_file(), name


def test_checkpoint_from_another_model_or_corrupt_is_refused(tmp_path):
    config = tiny_run_config(steps=5, eval_every=0, checkpoint_every=0)
    _train(config, tmp_path / "run")
    run_dir = tmp_path / "run"
    config_text = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(config_lib.to_json(dataclasses.replace(config, hidden=(8,))))
    with pytest.raises(checkpoints.CheckpointError, match="different model"):
        trained.load_run(run_dir)
    (run_dir / "config.json").write_text(config_text)
    assert int(trained.load_run(run_dir).state.step) == 5  # the refusal changed nothing on disk
    for path in (run_dir / "checkpoints").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "ocdbt" not in path.name and path.suffix != ".json":
            path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(checkpoints.CheckpointError):
        trained.load_run(run_dir)


def _logged_steps(run_dir, split="train"):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["split"] == split]


def test_resume_refuses_a_changed_setting_and_extends_steps(tmp_path):
    config = tiny_run_config(steps=10)
    _train(config, tmp_path / "run")
    for field, value in (("learning_rate", 1e-4), ("batch_size", 4), ("seed", 3), ("data", "photos:other")):
        with pytest.raises(runs.RunError, match=f"{field} .* only steps may change"):
            _train(tiny_run_config(steps=10, **{field: value}), tmp_path / "run", resume=True)
    summary = _train(tiny_run_config(steps=20), tmp_path / "run", resume=True)
    assert summary["start_step"] == 10 and summary["final_step"] == 20
    with pytest.raises(runs.RunError, match="already at step 20: steps=15 leaves nothing to train"):
        _train(tiny_run_config(steps=15), tmp_path / "run", resume=True)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"batch_size": 10**7}, "batch_size"),  # more crops than the photos give an epoch at any scale
        ({"steps_per_dispatch": 0}, "steps_per_dispatch"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"steps": -1}, "steps"),
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"model": "transformer"}, "model"),
    ],
)
def test_bad_settings_fail_before_the_run_directory_exists(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=f"^{field}: ") as raised:
        _train(tiny_run_config(**overrides), tmp_path / "run")
    assert raised.value.field == field
    assert not (tmp_path / "run").exists()
    _train(tiny_run_config(steps=5), tmp_path / "run")  # the retry is not blocked


def test_a_run_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(runs.RunError, match="exists and is not a directory"):
        _train(tiny_run_config(), tmp_path / "file")


def test_a_folder_without_test_images_is_refused_before_training(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "only.png")
    with pytest.raises(ConfigError, match="^data: .* has no test images"):
        _train(tiny_run_config(data=f"folder:{tmp_path / 'images'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _terminate_when_asked_for(monkeypatch, step):
    """Send SIGTERM (what schedulers send) when the data source is asked for the batches from
    ``step`` on; returns the real ``open_source`` to put back."""
    real_open = configured.open_source

    class TerminateAt:
        def __init__(self, source):
            self.source = source

        def __getattr__(self, name):
            return getattr(self.source, name)

        def train_batches(self, start_step, *args):
            if start_step == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return self.source.train_batches(start_step, *args)

    monkeypatch.setattr(configured, "open_source", lambda c, spec=None: TerminateAt(real_open(c, spec)))
    return real_open


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path, monkeypatch):
    _terminate_when_asked_for(monkeypatch, 15)
    summary = _train(tiny_run_config(), tmp_path / "run")
    assert summary["signal"] == "SIGTERM" and summary["interrupted_at"] == 15
    assert trained.load_run(tmp_path / "run").state.step == 15
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


@pytest.mark.slow
def test_resume_cuts_the_metrics_log_back_to_the_restored_step(tmp_path):
    config = tiny_run_config(steps=20)
    _train(config, tmp_path / "run")
    # As if killed after logging steps 15 and 20 but before the step-20 checkpoint was written.
    manager = checkpoints.manager(tmp_path / "run")
    manager.delete(20)
    _train(config, tmp_path / "run", resume=True)
    assert _logged_steps(tmp_path / "run") == [5, 10, 15, 20]
    assert _logged_steps(tmp_path / "run", "test") == [10, 20]
    # And a run killed before its first checkpoint starts over with an empty log.
    _train(tiny_run_config(steps=5, checkpoint_every=0), tmp_path / "early")
    for step in checkpoints.manager(tmp_path / "early").all_steps():
        checkpoints.manager(tmp_path / "early").delete(step)
    _train(tiny_run_config(steps=5, checkpoint_every=0), tmp_path / "early", resume=True)
    assert _logged_steps(tmp_path / "early") == [5]


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_a_run_that_stops_learning_stops_with_a_clear_error(tmp_path):
    """A learning rate of 1e30 takes one finite step to parameters whose loss is infinite; every
    later update is skipped, and the run stops instead of finishing "done"."""
    config = tiny_run_config(steps=60, learning_rate=1e30, warmup_steps=0, checkpoint_every=5, grad_clip=0.0)
    with pytest.raises(runs.RunError, match=r"training stopped at step \d+: .*(skipped|non-finite)"):
        _train(config, tmp_path / "run")
    restored = trained.load_run(tmp_path / "run")  # the checkpoints on disk are from before
    assert int(restored.state.step) <= 25


def test_an_iwae_run_logs_its_bound_evaluates_and_draws_its_curves(tmp_path):
    """The IWAE objective logs its bound instead of a KL: a run with it evaluates, draws its
    curves and finishes (the curves once read a KL every objective was assumed to log)."""
    _train(tiny_run_config(objective="iwae", k=3), tmp_path / "iwae")
    records = [json.loads(line) for line in (tmp_path / "iwae" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert train and all("iwae_bound" in r and "kl" not in r for r in train)
    assert all(r["loss"] == pytest.approx(-r["iwae_bound"]) for r in train)
    assert any(r.get("split") == "test" for r in records)
    assert (tmp_path / "iwae" / "curves.png").is_file()


def _signal_inside_the_dispatch_to(monkeypatch, step, *signals):
    """Send ``signals`` once the dispatch that reaches ``step`` has returned and before its result
    is assigned: where a handler that raised would lose the new state, the old one's buffers
    being donated to the step."""
    real_steps_of = configured.train_steps_of

    def steps_of(model, config, **how):
        train_steps = real_steps_of(model, config, **how)

        def signalled(state, batches):
            result = train_steps(state, batches)
            if int(result[0].step) == step:
                for signum in signals:
                    os.kill(os.getpid(), signum)
            return result

        return signalled

    monkeypatch.setattr(configured, "train_steps_of", steps_of)


def test_a_signal_during_a_dispatch_stops_after_it_with_its_state(tmp_path, monkeypatch):
    _signal_inside_the_dispatch_to(monkeypatch, 15, signal.SIGTERM)
    sigint_handler = signal.getsignal(signal.SIGINT)
    summary = _train(tiny_run_config(), tmp_path / "run")
    assert summary["signal"] == "SIGTERM" and summary["interrupted_at"] == 15
    assert trained.load_run(tmp_path / "run").state.step == 15
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # both handlers are put back


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_a_second_ctrl_c_inside_a_dispatch_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    # The first asks to stop after the dispatch; the second stops at once, losing its result.
    _signal_inside_the_dispatch_to(monkeypatch, 15, signal.SIGINT, signal.SIGINT)
    summary = _train(tiny_run_config(), tmp_path / "run")
    assert summary["signal"] == "SIGINT" and summary["interrupted_at"] == 10  # checkpoint_every=10
    assert trained.load_run(tmp_path / "run").state.step == 10


def _flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_resuming_past_a_damaged_checkpoint_keeps_two_intact_ones(tmp_path):
    """Issue 27: with step 30 damaged, a resume to 40 restored step 20, then orbax's max_to_keep
    deleted the intact 20 and kept the damaged 30; once 40 rotated out, no intact checkpoint was left."""
    run_dir = tmp_path / "run"
    _train(tiny_run_config(steps=30, eval_every=0), run_dir)
    data_files = (run_dir / "checkpoints" / "30" / "default" / "ocdbt.process_0" / "d").iterdir()
    _flip_one_byte(max(data_files, key=lambda p: p.stat().st_size))
    said = []
    runs.train(tiny_run_config(steps=40, eval_every=0), run_dir, resume=True, progress=False, log=said.append)
    assert said[0].endswith("restored the intact checkpoint at step 20 instead")
    assert said[1] == f"moved the damaged checkpoint {run_dir.absolute()}/checkpoints/30 to " \
                      f"{run_dir.absolute()}/checkpoints/damaged-30: it no longer counts as a checkpoint"  # fmt: skip
    assert checkpoints.manager(run_dir).all_steps() == [30, 40]
    for step in (30, 40):  # both intact: restoring either verifies its checksum
        assert int(trained.load_run(run_dir, step).state.step) == step
    assert (run_dir / "checkpoints" / "damaged-30").is_dir()


def _train_records(run_dir):
    """The train records of a run's log, less the split and what depends on the clock."""
    dropped = ("split", "time", "steps_per_s", "images_per_s")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in dropped} for r in records if r["split"] == "train"]


@pytest.mark.slow
def test_a_resumed_run_logs_the_train_records_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """Issue 27: the first train record after a resume averaged only the steps after it. The log
    window's sums are saved with each checkpoint: a run stopped mid-window (SIGTERM at step 10),
    resumed to the end of a shorter run (20, mid-window too) and then to 30 logs what the straight
    30-step run logs."""

    def config(steps):  # a constant learning rate: a 20-step run resumed to 30 follows the 30-step run
        return tiny_run_config(steps=steps, log_every=15, checkpoint_every=10, eval_every=0, warmup_steps=0,
                               end_learning_rate_ratio=1.0)  # fmt: skip

    _train(config(30), tmp_path / "straight")
    straight = _train_records(tmp_path / "straight")
    assert [r["step"] for r in straight] == [15, 30]
    real_open = _terminate_when_asked_for(monkeypatch, 10)
    assert _train(config(20), tmp_path / "resumed")["interrupted_at"] == 10
    monkeypatch.setattr(configured, "open_source", real_open)
    _train(config(20), tmp_path / "resumed", resume=True)
    assert [r["step"] for r in _train_records(tmp_path / "resumed")] == [15, 20]
    _train(config(30), tmp_path / "resumed", resume=True)
    resumed = _train_records(tmp_path / "resumed")
    assert [r.keys() for r in resumed] == [r.keys() for r in straight]
    assert resumed == [pytest.approx(r, rel=1e-6) for r in straight]


def test_a_checkpoint_saved_without_its_log_window_gives_a_record_that_says_what_it_averaged(tmp_path):
    """Checkpoints from before the window was saved with them: the first record after resuming at
    step 10 averages steps 11-15 only, and says so."""
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 5, "loss": 1.0}) + "\n")
    window = runs._resumed_window(None, tmp_path, 10)
    assert window == {"step": 10, "count": 0, "sums": {}, "from_step": 10}
    window.update(count=5, sums={"loss": 10.0})
    config = tiny_run_config()
    assert runs._train_record(15, window, {"steps": 0, "time": 0.0}, config, 0) == {
        "split": "train", "step": 15, "time": pytest.approx(runs.time.time(), abs=60), "from_step": 10, "loss": 2.0,
        "skipped_total": 0,
    }  # fmt: skip
    # Resumed where a record was written, the window was empty: nothing is missing from it.
    assert runs._resumed_window(None, tmp_path, 5) == {"step": 5, "count": 0, "sums": {}}


REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _vae_jax(*args, preexec_fn=None, as_nobody=False):
    """``vae-jax ARGS`` from this checkout, in a process of its own; ``as_nobody``: run by the
    unprivileged user nobody when this is root, which writes through any permission bits. Python
    itself may live where nobody cannot read (root's home), so the process drops its privileges
    once the command's modules are imported."""
    drop = f"os.setgid({NOBODY}); os.setuid({NOBODY})" if as_nobody and os.geteuid() == 0 else "pass"
    code = (
        "import os, sys; from vae_jax import checkpoints, cli, data, runs; from vae_jax.apps import compression; "
        f"{drop}; sys.exit(cli.main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=REPO, capture_output=True, text=True,
        preexec_fn=preexec_fn, env=dict(os.environ, HOME=tempfile.gettempdir()), timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def world_readable_dir():
    """A directory every user can reach (pytest's tmp_path is private to its owner), removed after."""
    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o755)
    yield directory
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o700)
    shutil.rmtree(directory)


def test_resuming_a_read_only_run_fails_before_any_work_naming_the_directory(world_readable_dir):
    """Issue 27: `train --resume` on a read-only run directory ended in PermissionError tracebacks.
    Root writes regardless of permission bits, so as root the command runs as the unprivileged user
    nobody, which they stop."""
    run_dir = world_readable_dir / "run"
    _train(tiny_run_config(steps=10, eval_every=0), run_dir)
    for path in [run_dir, *run_dir.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    done = _vae_jax("train", "--resume", "--run-dir", run_dir, "--steps", 20, "--no-progress", as_nobody=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"vae-jax train: error: cannot resume {run_dir}: {run_dir} is not writable, and resuming writes the "
        f"metrics log, checkpoints and pictures there; make the run directory writable (chmod -R u+w {run_dir}) "
        "or copy it somewhere writable"
    ]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_training_over_the_file_size_limit_is_one_clear_error_before_any_work(tmp_path):
    """Issue 27: under `ulimit -f 200` the checkpoint write's OUT_OF_RANGE error came with a dozen
    tracebacks from orbax's threads. The room a checkpoint needs is checked before training."""

    def limit_file_size():  # Python ignores SIGXFSZ: an oversized write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, resource.RLIM_INFINITY))

    sets = [x for key, value in {**TINY_RUN, "hidden": "16,"}.items() for x in ("--set", f"{key}={value}")]
    done = _vae_jax("train", "--run-dir", tmp_path / "run", "--no-progress", *sets, preexec_fn=limit_file_size)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"vae-jax train: error: cannot train in {tmp_path / 'run'}: a checkpoint needs about 628 KiB and the "
        "file-size limit (ulimit -f) is 200 KiB; nothing was written"
    ]
    assert not (tmp_path / "run").exists()
