"""Real multi-process training: 2 processes x 2 CPU devices over loopback (gloo collectives).

Both tests take minutes (slow); tests/test_main.py checks in the default suite that the
launch scripts pass flags ``bregflax.main`` knows, and that ``--multihost`` reaches
``jax.distributed.initialize``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow

FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


@pytest.fixture
def local(repo_root, tiny_args):
    """``local(workdir, *args)``: launch/local.sh with 2 processes of 2 devices each, on the
    tiny demo config; returns the processes' logs."""

    def run(workdir: Path, *extra: str) -> str:
        env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(repo_root)}
        args = ["--config=configs/demo.py", *tiny_args, f"--workdir={workdir}", *extra]
        cmd = ["bash", "launch/local.sh", "2", "2", "--", *args]
        result = subprocess.run(
            cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
        )
        logs = "".join(p.read_text() for p in sorted(workdir.glob("process_*.log")))
        assert result.returncode == 0, result.stderr + logs[-4000:]
        return logs  # whole: Gloo's lines come early, before whatever else a process logs

    return run


def test_two_processes_match_one_process(
    local, run_main, read_metric, final_params, assert_close_to_scale, shrink, demo_config, tmp_path
):
    logs = local(tmp_path / "multi")
    # Gloo's ranks print from threads whose lines may interleave ("[Gloo] Rank [Gloo] Rank
    # 0 is ... \n1 is ..."): 4 devices over 2 processes are 4 ranks, each with 3 peers.
    assert logs.count("is connected to 3 peer ranks") == 4, "4 devices over 2 processes"
    run_main(tmp_path / "single", env=FOUR_DEVICES)
    multi, single = read_metric(tmp_path / "multi"), read_metric(tmp_path / "single")
    assert len(multi) == len(single) == 12
    np.testing.assert_allclose(multi[0], single[0], rtol=1e-5)
    np.testing.assert_allclose(multi[:2], single[:2], rtol=1e-4)
    # Later steps amplify float rounding: see test_train.py::test_four_devices_match_one_device.
    np.testing.assert_allclose(multi, single, rtol=1e-2)
    local(tmp_path / "multi_step1", "--config.max_steps=1")
    run_main(tmp_path / "single_step1", "--config.max_steps=1", env=FOUR_DEVICES)
    config = shrink(demo_config)
    p_multi = final_params(tmp_path / "multi_step1", config)
    p_single = final_params(tmp_path / "single_step1", config)
    jax.tree.map(assert_close_to_scale, p_single, p_multi)
    g_multi = read_metric(tmp_path / "multi", "train/grad_norm")
    g_single = read_metric(tmp_path / "single", "train/grad_norm")
    np.testing.assert_allclose(g_multi[0], g_single[0], rtol=1e-4)
    # Only process 0 writes logs.
    records = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in records if "train/loss" in json.loads(r)]) == 12


def test_two_process_checkpoint_resumes_in_one_process(local, run_main, read_metric, tmp_path):
    local(tmp_path / "full", "--config.max_steps=7", "--config.checkpoint_every_steps=1")
    local(tmp_path / "cut", "--config.max_steps=6", "--config.checkpoint_every_steps=1")
    run_main(tmp_path / "cut", "--config.max_steps=7")  # one process, one device
    full, resumed = read_metric(tmp_path / "full"), read_metric(tmp_path / "cut")
    assert len(full) == len(resumed) == 7
    np.testing.assert_allclose(resumed[6], full[6], rtol=1e-5)
