"""Checkpoints: checksummed, a damaged newest one passed over for the intact one before it, a
clear error only when none is intact, and another model's refused; retention that never keeps a
damaged one in place of an intact one, and a write that does not fit refused in one line."""

import json
import resource
import shutil
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import checkpoints


class State(NamedTuple):
    step: jnp.ndarray
    params: dict


def _state(step):
    rng = np.random.default_rng(step)
    return State(jnp.int32(step), {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32), "b": jnp.zeros(8)})


def _saved(tmp_path, steps=(10, 20)):
    manager = checkpoints.manager(tmp_path)
    for step in steps:
        checkpoints.save(manager, _state(step))
    return manager


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_one_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_and_checksums_recorded(tmp_path):
    manager = _saved(tmp_path)
    restored = checkpoints.restore(manager, _state(0))
    assert int(restored.step) == 20
    np.testing.assert_array_equal(restored.params["w"], _state(20).params["w"])
    recorded = (tmp_path / "checkpoints" / checkpoints.CHECKSUMS).read_text()
    assert checkpoints.checksum(restored._asdict()) in recorded or '"20"' in recorded


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(tmp_path, damage):
    _saved(tmp_path)
    victim = _largest_file(tmp_path / "checkpoints" / "20")
    if damage == "flip":
        _flip_one_byte(victim)
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    warnings = []
    restored = checkpoints.restore(checkpoints.manager(tmp_path), _state(0), warn=warnings.append)
    assert int(restored.step) == 10
    np.testing.assert_array_equal(restored.params["w"], _state(10).params["w"])
    assert len(warnings) == 1 and "checkpoints/20" in warnings[0] and "step 10 instead" in warnings[0]
    assert len(warnings[0].splitlines()) == 1  # one line, not a TensorStore dump


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    _saved(tmp_path)
    for step in (10, 20):
        _flip_one_byte(_largest_file(tmp_path / "checkpoints" / str(step)))
    with pytest.raises(checkpoints.CheckpointError, match="no intact checkpoint: .*checkpoints/20.*checkpoints/10"):
        checkpoints.restore(checkpoints.manager(tmp_path), _state(0))


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    manager = _saved(tmp_path)
    other = State(jnp.int32(0), {"w": jnp.zeros((64, 16)), "b": jnp.zeros(8)})
    with pytest.raises(checkpoints.CheckpointError, match="different model"):
        checkpoints.restore(manager, other)


def test_checkpoints_from_before_checksums_restore_unverified(tmp_path):
    manager = _saved(tmp_path)
    (tmp_path / "checkpoints" / checkpoints.CHECKSUMS).unlink()
    assert int(checkpoints.restore(manager, _state(0)).step) == 20


def test_retention_keeps_the_newest_steps_and_their_records_only(tmp_path):
    manager = _saved(tmp_path, steps=(10, 20, 30))
    assert manager.all_steps() == [20, 30]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["20", "30", checkpoints.CHECKSUMS]
    recorded = json.loads((tmp_path / "checkpoints" / checkpoints.CHECKSUMS).read_text())
    assert recorded == {str(s): checkpoints.checksum(_state(s)._asdict()) for s in (20, 30)}


def test_damaged_steps_set_aside_never_count_among_the_kept(tmp_path):
    """A run resumed past a damaged step 20 moves it aside before saving; the steps it saves then
    keep two intact checkpoints (orbax's max_to_keep kept the damaged one in place of an intact one)."""
    _saved(tmp_path)
    _flip_one_byte(_largest_file(tmp_path / "checkpoints" / "20"))
    manager = checkpoints.manager(tmp_path)
    restored = checkpoints.restore(manager, _state(0), warn=lambda _: None)
    assert int(restored.step) == 10 and manager.all_steps() == [10, 20]  # restoring moves nothing
    said = []
    checkpoints.set_aside_newer(manager, 10, log=said.append)
    assert manager.all_steps() == [10]
    assert said == [f"moved the damaged checkpoint {tmp_path}/checkpoints/20 to {tmp_path}/checkpoints/damaged-20: "
                    "it no longer counts as a checkpoint"]  # fmt: skip
    for step in (20, 30):
        checkpoints.save(manager, _state(step))
    manager = checkpoints.manager(tmp_path)
    assert manager.all_steps() == [20, 30]
    for step in (20, 30):
        np.testing.assert_array_equal(checkpoints.restore(manager, _state(0), step).params["w"], _state(step).params["w"])
    assert (tmp_path / "checkpoints" / "damaged-20").is_dir()  # kept for the user to judge, out of the way
    # Damaged twice at the same step: the second goes next to the first.
    _flip_one_byte(_largest_file(tmp_path / "checkpoints" / "30"))
    checkpoints.restore(manager, _state(0), warn=lambda _: None)
    checkpoints.set_aside_newer(manager, 20, log=lambda _: None)
    _flip_one_byte(_largest_file(tmp_path / "checkpoints" / "20"))
    checkpoints.save(manager, _state(30))
    checkpoints.set_aside_newer(manager, 20, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("damaged-*")) == ["damaged-20", "damaged-30", "damaged-30-2"]


def test_a_checkpoint_that_does_not_fit_is_refused_naming_what_is_intact(tmp_path, monkeypatch):
    manager = _saved(tmp_path, steps=(10,))
    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: full)
    with pytest.raises(checkpoints.CheckpointWriteError) as raised:
        checkpoints.save(manager, _state(20))
    assert str(raised.value) == (
        f"could not write the checkpoint of step 20 to {tmp_path}/checkpoints: a checkpoint needs about 8 KiB and "
        f"the disk holding {tmp_path}/checkpoints has 1 KiB free; the checkpoints of steps 10 are intact"
    )
    monkeypatch.undo()
    assert checkpoints.manager(tmp_path).all_steps() == [10]
    assert int(checkpoints.restore(checkpoints.manager(tmp_path), _state(0)).step) == 10


# TensorStore's writes still in flight report into the event loop orbax closed, after the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_write_that_fails_midway_is_one_clear_error_without_tracebacks(tmp_path, monkeypatch, capfd):
    """Past the room check (the limit set after it), a write that hits the file-size limit: orbax and
    TensorStore print a traceback per thread; save raises one error and lets none through."""
    manager = _saved(tmp_path, steps=(10,))
    noise = np.random.default_rng(0).normal(size=(256, 256))  # 256 KiB that do not compress, over the limit
    big = State(jnp.int32(20), {"w": jnp.asarray(noise, jnp.float32), "b": jnp.zeros(8)})
    monkeypatch.setattr(checkpoints, "room_problem", lambda directory, tree: None)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    capfd.readouterr()
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(checkpoints.CheckpointWriteError) as raised:
            checkpoints.save(manager, big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(raised.value) == (
        f"could not write the checkpoint of step 20 to {tmp_path}/checkpoints: a file reached the file-size limit "
        "(ulimit -f); the checkpoints of steps 10 are intact"
    )
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err and "OUT_OF_RANGE" not in printed.err
    assert int(checkpoints.restore(checkpoints.manager(tmp_path), _state(0)).step) == 10
