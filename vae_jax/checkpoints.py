"""Orbax checkpoints of a ``TrainState``, checksummed, and checked against the model before they
are trusted.

A checkpoint is the state as a plain nested dict (``flax.serialization.to_state_dict``), so what is
on disk reads without any of this library's classes. Before orbax writes step ``s``, the SHA-256
of its arrays (paths, dtypes, shapes and bytes) goes into ``checkpoints/checksums.json``; restoring
compares every array's path, shape and dtype with the state the current configuration would
build, then the checksum of what was read. The latest checkpoint that is unreadable or whose
checksum differs is passed over, with a warning naming it, for the newest intact one (orbax keeps
``max_to_keep``); only when none is intact does restoring fail. A checkpoint from another model
is refused outright. Checkpoints written before checksums existed are restored unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import parallel

CHECKSUMS = "checksums.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or written by a different model."""


class _Damaged(Exception):
    """One checkpoint step that cannot be trusted (the caller may fall back to an older one)."""


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


def digest_tree(digest, tree):
    """Feed every leaf of ``tree`` to ``digest`` (a hashlib object) in order: its path, dtype, shape
    and little-endian bytes. Two trees feed the same bytes only if they are bit-identical."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest


def checksum(tree) -> str:
    """SHA-256 (hex) of every leaf of ``tree`` (``digest_tree``)."""
    return digest_tree(hashlib.sha256(), tree).hexdigest()


def _read_checksums(directory: Path) -> dict | None:
    path = Path(directory) / CHECKSUMS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a damaged record: every checkpoint is then checked against nothing and fails


def _write_checksums(directory: Path, checksums: dict) -> None:
    path = Path(directory) / CHECKSUMS
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(checksums, indent=2) + "\n")
    os.replace(temporary, path)


def save(checkpoints: ocp.CheckpointManager, state) -> None:
    """Save ``state`` at its step (once): its checksum first, then the arrays."""
    step = int(parallel.host_copy(state.step))
    if step in checkpoints.all_steps():
        return
    # Host copies: identical in every process of a multi-process job, so the checkpoint is written
    # once (orbax writes replicated arrays from the primary process) and its checksum is defined.
    tree = parallel.host_copy(flax.serialization.to_state_dict(state))
    directory = Path(checkpoints.directory)
    if parallel.is_primary():
        directory.mkdir(parents=True, exist_ok=True)
        recorded = _read_checksums(directory) or {}
        kept = {str(s) for s in checkpoints.all_steps()}
        _write_checksums(directory, {**{s: c for s, c in recorded.items() if s in kept}, str(step): checksum(tree)})
    checkpoints.save(step, args=ocp.args.StandardSave(tree))
    checkpoints.wait_until_finished()


def _describe(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name) for path, leaf in flat}


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _restore_step(checkpoints, template, step, checksums):
    """The state at ``step``: ``CheckpointError`` if it is another model's, ``_Damaged`` if it
    cannot be read or its arrays are not the ones saved."""
    where = f"{checkpoints.directory}/{step}"
    expected = flax.serialization.to_state_dict(template)
    try:
        saved = checkpoints.item_metadata(step)
        saved = getattr(saved, "tree", saved)
    except Exception as error:  # orbax raises many types for unreadable metadata
        raise _Damaged(f"checkpoint {where} is unreadable: {_first_line(error)}") from None
    want, have = _describe(expected), _describe(saved)
    if want != have:
        differing = sorted(set(want.items()) ^ set(have.items()))[:4]
        raise CheckpointError(
            f"checkpoint {where} was written by a different model: "
            f"{len(set(want) ^ set(have))} arrays missing or extra, first differences "
            + "; ".join(f"{path} {shape} {dtype}" for path, (shape, dtype) in differing)
        )
    try:
        restored = checkpoints.restore(step, args=ocp.args.StandardRestore(expected))
    except Exception as error:
        raise _Damaged(f"checkpoint {where} could not be read: {_first_line(error)}") from None
    if checksums is not None:
        recorded = checksums.get(str(step))
        if recorded is None:
            raise _Damaged(f"checkpoint {where} has no recorded checksum")
        if checksum(restored) != recorded:
            raise _Damaged(f"checkpoint {where} does not match its checksum (its files were changed or damaged)")
    return flax.serialization.from_state_dict(template, restored)


def restore(checkpoints: ocp.CheckpointManager, template, step: int | None = None, *, warn=None):
    """The state saved at ``step``, shaped like ``template``; by default the newest intact one,
    with ``warn(message)`` (default: ``warnings.warn``) naming every newer checkpoint passed over."""
    if warn is None:
        import warnings

        warn = lambda message: warnings.warn(message, stacklevel=3)
    where = checkpoints.directory
    steps = sorted(checkpoints.all_steps(), reverse=True) if step is None else [step]
    if not steps:
        raise CheckpointError(f"no checkpoint found in {where}")
    checksums = _read_checksums(where)
    problems = []
    for candidate in steps:
        try:
            state = _restore_step(checkpoints, template, candidate, checksums)
        except _Damaged as damaged:
            problems.append(str(damaged))
            continue
        for problem in problems:
            warn(f"{problem}; restored the intact checkpoint at step {candidate} instead")
        return state
    raise CheckpointError("no intact checkpoint: " + "; ".join(problems))
