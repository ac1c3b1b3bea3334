"""The data-parallel mesh: batch-size check and the global batch from local parts."""

from types import SimpleNamespace

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from bregflax.training.parallel import DEVICE_KEYS, Parallel


def test_batches_are_split_along_data_and_the_state_is_replicated():
    parallel = Parallel.over_all_devices()
    assert parallel.mesh.axis_names == ("data",)
    assert (
        parallel.batch.spec == PartitionSpec("data") and parallel.replicated.spec == PartitionSpec()
    )


def test_batch_size_must_divide_over_the_devices():
    four = SimpleNamespace(mesh=SimpleNamespace(devices=np.empty((4,), object)))
    Parallel.check_batch_size(four, 32)
    with pytest.raises(ValueError, match="batch size 30 must be divisible by the 4 devices"):
        Parallel.check_batch_size(four, 30)
    Parallel.over_all_devices().check_batch_size(32)


def test_shard_batch_sends_the_device_keys_only():
    local = {
        "image": np.ones((4, 8, 8, 1), np.float32),
        "label": np.arange(4),
        "mask": np.ones(4, np.float32),
        "source_id": np.array(["a", "b", "c", "d"]),  # host-side only
    }
    sharded = Parallel.over_all_devices().shard_batch(local)
    assert set(sharded) == {"image", "label", "mask"} <= set(DEVICE_KEYS)
    np.testing.assert_array_equal(np.asarray(sharded["label"]), local["label"])
