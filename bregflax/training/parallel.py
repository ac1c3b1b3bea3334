"""Data parallelism: one ``jax.jit`` program over a 1-D ``Mesh`` named "data".

Batches are sharded along the mesh and the train state is replicated, so XLA's SPMD
partitioner inserts the all-reduces itself: gradients are averaged and BatchNorm statistics
are computed over the global batch, exactly as on one device.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bregflax.configs import ConfigError

DEVICE_KEYS = ("image", "label", "valence", "arousal", "mask")


@dataclasses.dataclass(frozen=True)
class Parallel:
    """The device mesh and the shardings of batches and of the replicated state."""

    mesh: Mesh

    @classmethod
    def over_all_devices(cls) -> Parallel:
        """All devices of all processes along "data", in ``jax.make_mesh``'s order (which
        follows the interconnect on TPUs and GPUs), with the sharding left to the compiler."""
        auto = (jax.sharding.AxisType.Auto,)
        return cls(jax.make_mesh((jax.device_count(),), ("data",), axis_types=auto))

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def check_batch_size(self, global_batch_size: int, name: str = "batch size") -> None:
        """ConfigError unless ``global_batch_size`` splits evenly over the devices and the
        processes (``name`` says which batch size, in the message)."""
        devices = self.mesh.devices.size
        processes = len({getattr(d, "process_index", 0) for d in self.mesh.devices.flat})
        for count, what in ((devices, "devices"), (processes, "processes")):
            if global_batch_size % count:
                raise ConfigError(
                    f"{name} {global_batch_size} must be divisible by the {count} {what}"
                )

    def shard_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Assembles the global batch from this process's part of it (keys in DEVICE_KEYS)."""
        return {
            k: jax.make_array_from_process_local_data(self.batch, np.asarray(local[k]))
            for k in DEVICE_KEYS
            if k in local
        }
