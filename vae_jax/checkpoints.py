"""Orbax checkpoints of a ``TrainState``, checked against the model before they are trusted.

A checkpoint is the state as a plain nested dict (``flax.serialization.to_state_dict``), so
what is on disk reads without any of this library's classes. Restoring compares every array's
path, shape and dtype with the state the current configuration would build, and refuses a
checkpoint from another model, or a damaged one, with an error naming what differs.
"""

from __future__ import annotations

from pathlib import Path

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or written by a different model."""


def manager(run_dir: Path, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    # Synchronous saves: the train step donates its state buffers, so a save must finish
    # reading them before the next dispatch reuses the memory.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(
        Path(run_dir).absolute() / "checkpoints",
        options=options,
        item_handlers=ocp.StandardCheckpointHandler(),
    )


def save(checkpoints: ocp.CheckpointManager, state) -> None:
    step = int(state.step)
    if step in checkpoints.all_steps():
        return
    checkpoints.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)))
    checkpoints.wait_until_finished()


def _describe(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name) for path, leaf in flat}


def restore(checkpoints: ocp.CheckpointManager, template, step: int | None = None):
    """The state saved at ``step`` (default: the latest), shaped like ``template``."""
    step = checkpoints.latest_step() if step is None else step
    where = checkpoints.directory
    if step is None:
        raise CheckpointError(f"no checkpoint found in {where}")
    expected = flax.serialization.to_state_dict(template)
    try:
        saved = checkpoints.item_metadata(step)
        saved = getattr(saved, "tree", saved)
    except Exception as error:  # orbax raises many types for unreadable metadata
        raise CheckpointError(f"checkpoint {where}/{step} is unreadable (corrupt?): {error}") from error
    want, have = _describe(expected), _describe(saved)
    if want != have:
        differing = sorted(set(want.items()) ^ set(have.items()))[:4]
        raise CheckpointError(
            f"checkpoint {where}/{step} was written by a different model: "
            f"{len(set(want) ^ set(have))} arrays missing or extra, first differences "
            + "; ".join(f"{path} {shape} {dtype}" for path, (shape, dtype) in differing)
        )
    try:
        restored = checkpoints.restore(step, args=ocp.args.StandardRestore(expected))
    except Exception as error:
        raise CheckpointError(f"checkpoint {where}/{step} could not be read (corrupt?): {error}") from error
    return flax.serialization.from_state_dict(template, restored)
