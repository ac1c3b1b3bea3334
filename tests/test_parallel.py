"""The data-parallel mesh: batch-size check and the global batch from local parts."""

import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from bregflax.training.parallel import DEVICE_KEYS, Parallel


def test_batches_are_split_along_data_and_the_state_is_replicated():
    """On 4 (forced host) devices: each device holds a quarter of the batch's rows, in order,
    and the whole replicated state; a jitted global mean equals numpy's."""
    code = (
        "import numpy as np, jax, jax.numpy as jnp\n"
        "from bregflax.training.parallel import Parallel\n"
        "p = Parallel.over_all_devices()\n"
        "x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)\n"
        "b = p.shard_batch({'image': x})['image']\n"
        "shards = b.addressable_shards\n"
        "rows = sorted((s.index[0].start, np.asarray(s.data).tolist()) for s in shards)\n"
        "assert [r[0] for r in rows] == [0, 2, 4, 6], rows\n"
        "assert all(np.array_equal(d, x[i:i + 2]) for i, d in rows)\n"
        "w = jax.device_put(np.ones(3, np.float32), p.replicated)\n"
        "assert all(np.array_equal(s.data, np.ones(3)) for s in w.addressable_shards)\n"
        "assert len(w.addressable_shards) == 4\n"
        "m = jax.jit(lambda a, w: jnp.mean(a * w))(b, w)\n"
        "assert np.isclose(float(m), x.mean()), (float(m), x.mean())\n"
        "print('ok')\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_batch_size_must_divide_over_the_devices():
    four = SimpleNamespace(mesh=SimpleNamespace(devices=np.empty((4,), object)))
    Parallel.check_batch_size(four, 32)
    with pytest.raises(ValueError, match="batch size 30 must be divisible by the 4 devices"):
        Parallel.check_batch_size(four, 30)
    Parallel.over_all_devices().check_batch_size(32)


def test_batch_size_must_divide_over_the_processes():
    """Two devices on one process and one on another: 3 devices, 2 processes."""
    devices = np.array([SimpleNamespace(process_index=p) for p in (0, 0, 1)], object)
    three = SimpleNamespace(mesh=SimpleNamespace(devices=devices))
    Parallel.check_batch_size(three, 6, "config.eval_batch_size")
    with pytest.raises(ValueError, match="config.eval_batch_size 3 must be divisible by the 2 pro"):
        Parallel.check_batch_size(three, 3, "config.eval_batch_size")


def test_the_mesh_is_jax_make_mesh():
    mesh = Parallel.over_all_devices().mesh
    want = jax.make_mesh((jax.device_count(),), ("data",))
    assert list(mesh.devices.flat) == list(want.devices.flat)
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)  # sharding left to the compiler


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
