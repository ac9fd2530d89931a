"""Orbax checkpoints of a ``TrainState``, checksummed, and checked against the model before they
are trusted.

A checkpoint is the state as a plain nested dict (``flax.serialization.to_state_dict``), so what is
on disk reads without any of this library's classes. Before orbax writes step ``s``, the SHA-256
of its arrays (paths, dtypes, shapes and bytes) goes into ``checkpoints/checksums.json``; restoring
compares every array's path, shape and dtype with the state the current configuration would
build, then the checksum of what was read. The latest checkpoint that is unreadable or whose
checksum differs is passed over, with a warning naming it, for the newest intact one; only when
none is intact does restoring fail. A checkpoint from another model is refused outright.
Checkpoints written before checksums existed are restored unverified.

Retention is done here, not by orbax: after each save the newest ``KEEP`` steps stay and older
ones are deleted. A training run that resumes past damaged checkpoints first moves them aside
(``checkpoints/damaged-STEP``), so a damaged one never counts among the kept ones and never
outlives an intact one. Moved, not deleted: a checksum also disagrees when its record was damaged
or copied from another run, and the files are then the user's to judge.

Before a write, the room it needs (its arrays' bytes) is checked against the file-size limit and
the disk's free space; a write that fails anyway raises ``CheckpointWriteError`` naming the
checkpoints still intact, and what orbax's threads print about the failure is held back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import parallel

try:
    import resource
except ImportError:  # Windows: no file-size limit to read
    resource = None

CHECKSUMS = "checksums.json"
# JSON values a caller saves with a step (the training loop's partial log window), by step.
EXTRAS = "extras.json"
# Steps kept after each save: the newest, so a damaged latest one leaves an intact one before it.
KEEP = 2
DAMAGED_PREFIX = "damaged-"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, written by a different model, or cannot be written."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, the file-size limit); the ones saved
    before it are intact."""


class _Damaged(Exception):
    """One checkpoint step that cannot be trusted (the caller may fall back to an older one)."""


def manager(run_dir: Path) -> ocp.CheckpointManager:
    # Synchronous saves: the train step donates its state buffers, so a save must finish
    # reading them before the next dispatch reuses the memory. No max_to_keep: ``save`` retains.
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
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


def _read_record(directory: Path, name: str) -> dict | None:
    """A JSON file of the checkpoints folder keyed by step: None if missing, {} if damaged (every
    checksum then has nothing to match)."""
    path = Path(directory) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _write_record(directory: Path, name: str, record: dict) -> None:
    path = Path(directory) / name
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, path)


def extra(checkpoints: ocp.CheckpointManager, step: int):
    """The ``extra`` value saved with ``step``; None if none was (or its record is damaged)."""
    return (_read_record(checkpoints.directory, EXTRAS) or {}).get(str(step))


def room_problem(directory: Path, tree) -> str | None:
    """Why a checkpoint of ``tree`` (about its arrays' bytes) cannot be written under
    ``directory``: the process's file-size limit (``ulimit -f``), or the free space of the disk
    holding its nearest existing folder. None if it fits."""
    needed = sum(np.dtype(leaf.dtype).itemsize * int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree))
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and limit < needed:
            return f"a checkpoint needs about {_size(needed)} and the file-size limit (ulimit -f) is {_size(limit)}"
    existing = Path(directory).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        return f"a checkpoint needs about {_size(needed)} and the disk holding {existing} has {_size(free)} free"
    return None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _write_failure(checkpoints, step: int, problem: str) -> CheckpointWriteError:
    kept = sorted(checkpoints.all_steps())
    intact = f"the checkpoints of steps {', '.join(map(str, kept))} are intact" if kept else "no checkpoint was saved before it"
    return CheckpointWriteError(f"could not write the checkpoint of step {step} to {checkpoints.directory}: {problem}; {intact}")


def _why_write_failed(error: Exception) -> str:
    # TensorStore puts the OS error inside a long message, as os_error_code='N'.
    found = re.search(r"os_error_code='?(\d+)", str(error))
    code = int(found.group(1)) if found else getattr(error, "errno", None)
    if code == errno.EFBIG:
        return "a file reached the file-size limit (ulimit -f)"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "the disk is full"
    return _first_line(error)


@contextlib.contextmanager
def _output_held_back():
    """Hold back what is printed during an orbax write (``sys.stderr``, absl's log records): put
    out after a write that succeeds, dropped after one that fails, where orbax and TensorStore
    print a traceback per thread and array for the one error ``save`` raises."""
    held_text, held_records = io.StringIO(), []
    absl_logger = logging.getLogger("absl")

    def hold(record):
        held_records.append(record)
        return False

    real_stderr, sys.stderr = sys.stderr, held_text
    absl_logger.addFilter(hold)
    try:
        yield
    finally:
        sys.stderr = real_stderr
        absl_logger.removeFilter(hold)
    real_stderr.write(held_text.getvalue())
    for record in held_records:
        absl_logger.handle(record)


def save(checkpoints: ocp.CheckpointManager, state, *, extra=None, keep: int = KEEP) -> None:
    """Save ``state`` at its step (once): its checksum (and ``extra``, any JSON value) first, then
    the arrays; then delete all but the newest ``keep`` steps. ``CheckpointWriteError`` if it
    does not fit or its write fails, the checkpoints before it left as they were."""
    step = int(parallel.host_copy(state.step))
    if step in checkpoints.all_steps():
        return
    # Host copies: identical in every process of a multi-process job, so the checkpoint is written
    # once (orbax writes replicated arrays from the primary process) and its checksum is defined.
    tree = parallel.host_copy(flax.serialization.to_state_dict(state))
    directory = Path(checkpoints.directory)
    problem = room_problem(directory, tree)
    if problem is not None:
        raise _write_failure(checkpoints, step, problem)
    try:
        if parallel.is_primary():
            directory.mkdir(parents=True, exist_ok=True)
            _write_record(directory, CHECKSUMS, {**(_read_record(directory, CHECKSUMS) or {}), str(step): checksum(tree)})
            if extra is not None:
                _write_record(directory, EXTRAS, {**(_read_record(directory, EXTRAS) or {}), str(step): extra})
        with _output_held_back():
            checkpoints.save(step, args=ocp.args.StandardSave(tree))
            checkpoints.wait_until_finished()
    except Exception as error:  # orbax and TensorStore raise many types for a failed write
        raise _write_failure(checkpoints, step, _why_write_failed(error)) from None
    _retain(checkpoints, keep)


def _retain(checkpoints: ocp.CheckpointManager, keep: int) -> None:
    """Delete all but the newest ``keep`` steps, and their records."""
    steps = sorted(checkpoints.all_steps())
    for old in steps[: max(len(steps) - keep, 0)]:
        checkpoints.delete(old)
    if parallel.is_primary():
        kept = {str(step) for step in steps[-keep:]}
        for name in (CHECKSUMS, EXTRAS):
            record = _read_record(checkpoints.directory, name)
            if record and set(record) - kept:
                _write_record(checkpoints.directory, name, {s: v for s, v in record.items() if s in kept})


def set_aside_newer(checkpoints: ocp.CheckpointManager, step: int, *, log=print) -> None:
    """Move every checkpoint newer than ``step`` (the ones ``restore`` passed over as damaged) out
    of the steps orbax sees, to ``damaged-STEP`` (``-2``... if that is taken), saying so with
    ``log``: a run that trains on from ``step`` saves those steps again, and retention then never
    counts a damaged one among the kept. The next save of a step replaces its checksum."""
    directory = Path(checkpoints.directory)
    newer = [s for s in checkpoints.all_steps() if s > step]
    for damaged in newer if parallel.is_primary() else []:
        target, suffix = directory / f"{DAMAGED_PREFIX}{damaged}", 1
        while target.exists():
            suffix += 1
            target = directory / f"{DAMAGED_PREFIX}{damaged}-{suffix}"
        os.rename(directory / str(damaged), target)
        log(f"moved the damaged checkpoint {directory / str(damaged)} to {target}: it no longer counts as a checkpoint")
    if newer:
        parallel.barrier("vae-jax: damaged checkpoints set aside")
        checkpoints.reload()


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
    with ``warn(message)`` (default: ``warnings.warn``) naming every newer checkpoint passed over
    (a run that trains on moves those aside first: ``set_aside_newer``). Changes nothing on disk."""
    if warn is None:
        import warnings

        warn = lambda message: warnings.warn(message, stacklevel=3)
    where = checkpoints.directory
    steps = sorted(checkpoints.all_steps(), reverse=True) if step is None else [step]
    if not steps:
        raise CheckpointError(f"no checkpoint found in {where}")
    checksums = _read_record(where, CHECKSUMS)
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
