"""SLURM: the GPUs each task takes, its input threads, and jax finding an emulated allocation.

The last test starts two processes under the SLURM variables jax reads (slow); the others
check the rules against jax's own SLURM detection without starting anything.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bregflax.training import slurm

# One node, 8 tasks of one 8-GPU step (srun's own variables).
STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[017-018]",
    "SLURM_NODELIST": "gpu[017-018]",
    "SLURM_NTASKS": "16",
    "SLURM_PROCID": "11",
    "SLURM_LOCALID": "3",
    "SLURM_NODEID": "1",
    "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
    "SLURM_STEP_GPUS": "0,1,2,3,4,5,6,7",
}


@pytest.mark.parametrize(
    "extra, want",
    [
        ({"CUDA_VISIBLE_DEVICES": "3"}, [0]),  # --gpu-bind=single:1, no device cgroup
        ({"CUDA_VISIBLE_DEVICES": "0"}, [0]),  # --gpu-bind=single:1 under a device cgroup
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, [3]),  # all visible, one task per GPU
        (  # all visible, one task per node: every GPU
            {
                "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
                "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
                "SLURM_LOCALID": "0",
            },
            list(range(8)),
        ),
        (  # all visible, 2 tasks per node: four GPUs each
            {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
            | {"SLURM_LOCALID": "1"},
            [4, 5, 6, 7],
        ),
        (  # --gpus-per-task=4 with binding: each task sees its own four
            {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
            | {"SLURM_LOCALID": "1"},
            [0, 1, 2, 3],
        ),
        ({"ROCR_VISIBLE_DEVICES": "5"}, [0]),
        ({}, None),  # no GPU variables: jax's own choice
        ({"CUDA_VISIBLE_DEVICES": "0", "JAX_LOCAL_DEVICE_IDS": "0"}, None),  # the user's own
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "SLURM_STEP_TASKS_PER_NODE": "3,5"}, None),
    ],
)
def test_local_device_ids(extra, want):
    assert slurm.local_device_ids(STEP | extra) == want


def test_outside_slurm_nothing_is_chosen():
    assert slurm.local_device_ids({"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert slurm.input_threads({}) is None


@pytest.mark.parametrize(
    "spec, node, want", [("8(x2)", 1, 8), ("3,5", 1, 5), ("2(x3),1", 3, 1), ("2", 1, None)]
)
def test_tasks_on_node(spec, node, want):
    assert slurm.tasks_on_node(spec, node) == want


def test_input_threads_follow_cpus_per_task():
    assert slurm.input_threads({"SLURM_CPUS_PER_TASK": "8"}) == 8
    assert slurm.input_threads({"SLURM_CPUS_PER_TASK": "0"}) is None


def test_jax_detects_the_step_these_variables_describe(monkeypatch):
    """jax's own SLURM detection, on the variables these tests use: with one GPU bound per
    task it would keep to GPU number SLURM_LOCALID (3), which the task does not have."""
    from jax._src import clusters

    for key, value in (STEP | {"CUDA_VISIBLE_DEVICES": "3"}).items():
        monkeypatch.setenv(key, value)
    found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, None
    )
    port = 4242 % 2**12 + 65535 - 2**12 + 1
    assert found == (f"gpu017:{port}", 16, 11, [3])
    assert slurm.local_device_ids(os.environ) == [0]


def _slurm_job_id_for_a_free_port() -> int:
    """A job id whose coordinator port (jax: 61440 + id % 4096) is free on loopback."""
    for job in range(1000, 5096):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + job % 4096))
            except OSError:
                continue
        return job
    raise RuntimeError("no free port in jax's SLURM range")


@pytest.mark.slow
def test_two_tasks_of_an_emulated_allocation_train_like_one_process(
    repo_root, tiny_args, run_main, read_metric, tmp_path
):
    """``python -m bregflax.main --multihost`` with no addresses, as launch/slurm.sbatch runs
    it: jax finds the coordinator, the task count and each rank in the SLURM variables."""
    workdir = tmp_path / "slurm"
    job = _slurm_job_id_for_a_free_port()
    common = {
        **os.environ,
        "PYTHONPATH": str(repo_root),
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": "2",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "SLURM_JOB_ID": str(job),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NODELIST": "localhost",
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "1",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_CPUS_PER_TASK": "1",
    }
    cmd = [sys.executable, "-m", "bregflax.main", "--config=configs/demo.py", *tiny_args]
    cmd += [f"--workdir={workdir}", "--multihost"]
    workdir.mkdir()
    procs = []
    for rank in range(2):
        env = common | {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        log = open(workdir / f"task_{rank}.log", "w")  # noqa: SIM115
        procs.append((subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=log, stderr=log), log))
    for proc, log in procs:
        proc.wait(timeout=600)
        log.close()
    logs = "".join(Path(log.name).read_text()[-3000:] for _, log in procs)
    assert all(proc.returncode == 0 for proc, _ in procs), logs
    assert "Rank 1 is connected to 3 peer ranks" in logs, "4 devices over 2 processes"
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["num_threads"] == 1  # SLURM_CPUS_PER_TASK
    run_main(tmp_path / "single", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    multi, single = read_metric(workdir), read_metric(tmp_path / "single")
    assert len(multi) == len(single) == 12
    np.testing.assert_allclose(multi[:2], single[:2], rtol=1e-4)
    np.testing.assert_allclose(multi, single, rtol=1e-2)  # as tests/test_multihost.py
