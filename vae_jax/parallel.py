"""Data-parallel training on JAX's own engine: a ``Mesh`` over devices, the batch sharded along
its ``"data"`` axis, parameters and optimiser state replicated.

Nothing here changes the train step: ``jax.jit`` partitions it from the input shardings
(GSPMD), turning the batch mean of the gradient into an all-reduce across devices. With the
same global batch the result equals single-device training up to float reassociation.

Across hosts, start every process with ``initialize_distributed`` (``jax.distributed``) before
any other JAX call; each process then feeds its own rows of every global batch, and
``jax.devices()`` spans all hosts, so the same mesh code runs unchanged.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


# A process that never joins, or dies mid-run, ends the others' wait after this long (seconds)
# instead of JAX's defaults (300 s to join, 100 s of missed heartbeats).
JOIN_TIMEOUT_S = 120
HEARTBEAT_TIMEOUT_S = 30


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, join_timeout_s: int = JOIN_TIMEOUT_S,
                           heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> None:  # fmt: skip
    """Join a multi-host job (``jax.distributed.initialize``). With no arguments JAX reads the
    cluster from its environment (SLURM, TPU pods, ``JAX_COORDINATOR_ADDRESS`` ...).

    A process missing at the start fails every process after ``join_timeout_s``; one that stops
    answering mid-run is detected by the coordinator within ``heartbeat_timeout_s``, which then
    ends the job: a bounded wait, never a hang.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
        initialization_timeout=join_timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s,
    )  # fmt: skip


def is_primary() -> bool:
    """Whether this process writes the run's files (one writer per job: process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of a multi-process job reaches ``name`` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_copy(tree):
    """``tree`` as NumPy arrays in this process. A replicated array that spans several processes is
    not fully addressable (``jax.device_get`` refuses it); each process holds a whole copy, so
    its first local shard is the value."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(local, tree)


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (0: all of them)."""
    devices = jax.devices()
    count = num_devices or len(devices)
    if not 1 <= count <= len(devices):
        raise ValueError(
            f"devices: asked for {num_devices}, but {len(devices)} {jax.default_backend()} device(s) exist"
        )
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shard axis ``batch_axis`` (0 for a batch, 1 for a stack of batches) across the mesh."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """``tree`` on every device of ``mesh``. Across processes each one places its own copy from
    host memory: moving one process's device arrays to another host is not a CPU transfer JAX has."""
    if jax.process_count() > 1:
        tree = host_copy(tree)
    return jax.device_put(tree, replicated(mesh))


def shard_batches(global_batches: np.ndarray, mesh: Mesh, batch_axis: int = 1) -> jax.Array:
    """Place this process's rows of a global batch (stack) on its devices, sharded by rows.

    Every process computes the same global batches (the data sources are pure functions of the
    step) and contributes the contiguous block of rows that its devices own.
    """
    size = global_batches.shape[batch_axis]
    if size % mesh.size:
        raise ValueError(f"batch_size: {size} does not split evenly over {mesh.size} devices")
    sharding = batch_sharding(mesh, batch_axis)
    per_process = size // jax.process_count()
    start = jax.process_index() * per_process
    local = np.take(global_batches, np.arange(start, start + per_process), axis=batch_axis)
    return jax.make_array_from_process_local_data(sharding, local, global_batches.shape)
