"""Checkpoints: checksummed, a damaged newest one passed over for the intact one before it, a
clear error only when none is intact, and another model's refused."""

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
