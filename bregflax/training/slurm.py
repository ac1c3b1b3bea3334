"""SLURM allocations: the GPUs a task trains on and its input threads, from SLURM's variables.

``jax.distributed.initialize()`` finds a SLURM job by itself (``SLURM_JOB_ID``,
``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``) and then
keeps to the GPU numbered ``SLURM_LOCALID``. That is right only when every task sees all of
its node's GPUs and runs one of them: with ``srun --gpu-bind=single:1`` each task sees one
GPU, numbered 0, and ranks 1-7 fail with "invalid device ordinal" (jax-ml/jax#23452), and
one task per node would train on one GPU of eight. ``local_device_ids`` gives the ids to
pass instead. Pure functions of the environment: no jax here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# What jax's SlurmCluster needs to detect a job (jax/_src/clusters/slurm_cluster.py).
JAX_DETECTS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")
VISIBLE = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def in_job_step(environ: Mapping[str, str]) -> bool:
    """Whether jax will take this process for a task of a SLURM job step."""
    return all(k in environ for k in (*JAX_DETECTS, "SLURM_LOCALID"))


def tasks_on_node(spec: str, node: int) -> int | None:
    """Node ``node``'s entry of SLURM's tasks-per-node text, e.g. "8(x2),4" -> 8, 8, 4."""
    counts = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    return counts[node] if 0 <= node < len(counts) else None


def _ids(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t.strip()]


def local_device_ids(environ: Mapping[str, str]) -> list[int] | None:
    """The GPUs (numbered as this process sees them) this task should train on, or None to
    leave jax's choice (outside SLURM, without GPU variables, or ``JAX_LOCAL_DEVICE_IDS``).

    A task that sees fewer GPUs than the step holds on its node, or fewer than there are
    tasks on the node, was bound to its own (``--gpu-bind``): it takes all it sees. A task
    that sees all of them takes its share, in ``SLURM_LOCALID`` order: one GPU each with
    one task per GPU, all of them with one task per node.
    """
    if not in_job_step(environ) or environ.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    visible = next((_ids(environ[k]) for k in VISIBLE if k in environ), None)
    if visible is None:
        on_node = environ.get("SLURM_GPUS_ON_NODE", "")
        visible = [str(i) for i in range(int(on_node))] if on_node.isdigit() else []
    if not visible:
        return None
    held = _ids(environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS"))
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    tasks = tasks_on_node(spec, int(environ.get("SLURM_NODEID", "0") or 0))
    tasks = tasks or int(environ.get("SLURM_NTASKS_PER_NODE", "0") or 0) or 1
    local, n = int(environ["SLURM_LOCALID"]), len(visible)
    if (held and n < len(held)) or n < tasks:
        return list(range(n))
    if n % tasks:
        return None  # no even share: jax's own choice, GPU number SLURM_LOCALID
    share = n // tasks
    return list(range(local * share, (local + 1) * share))


def input_threads(environ: Mapping[str, str]) -> int | None:
    """Input threads for a task given ``--cpus-per-task`` (``SLURM_CPUS_PER_TASK``), or None."""
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    return int(cpus) if cpus.isdigit() and int(cpus) >= 1 else None
