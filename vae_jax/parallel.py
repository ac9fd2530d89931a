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


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:  # fmt: skip
    """Join a multi-host job (``jax.distributed.initialize``). With no arguments JAX reads the
    cluster from its environment (SLURM, TPU pods, ``JAX_COORDINATOR_ADDRESS`` ...)."""
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


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
