"""Real multi-process training: 2 processes x 2 CPU devices over loopback (gloo collectives)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from conftest import ROOT, load_config, tiny
from test_train import TINY_ARGS, _final_params, _losses, _main, assert_close_to_scale

ARGS = ["--config=configs/demo.py", *TINY_ARGS]


def _local(workdir: Path, *extra: str) -> None:
    """launch/local.sh with 2 processes of 2 devices each, bounded in time."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    cmd = ["bash", "launch/local.sh", "2", "2", "--", *ARGS, f"--workdir={workdir}", *extra]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text()[-2000:] for p in sorted(workdir.glob("process_*.log")))
    assert result.returncode == 0, result.stderr + logs
    return logs


def test_two_processes_match_one_process(tmp_path):
    logs = _local(tmp_path / "multi")
    assert "Rank 1 is connected to 3 peer ranks" in logs, "4 devices over 2 processes"
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    _main(tmp_path / "single", env=four)
    multi, single = _losses(tmp_path / "multi"), _losses(tmp_path / "single")
    assert len(multi) == len(single) == 12
    np.testing.assert_allclose(multi[0], single[0], rtol=1e-5)
    np.testing.assert_allclose(multi[:2], single[:2], rtol=1e-4)
    np.testing.assert_allclose(multi, single, rtol=1e-2)  # see test_four_devices_match_one_device
    _local(tmp_path / "multi_step1", "--config.max_steps=1")
    _main(tmp_path / "single_step1", "--config.max_steps=1", env=four)
    config = tiny(load_config("configs/demo.py"))
    p_multi = _final_params(tmp_path / "multi_step1", config)
    p_single = _final_params(tmp_path / "single_step1", config)
    jax.tree.map(assert_close_to_scale, p_single, p_multi)
    g_multi, g_single = (
        _losses(tmp_path / "multi", "train/grad_norm"),
        _losses(tmp_path / "single", "train/grad_norm"),
    )
    np.testing.assert_allclose(g_multi[0], g_single[0], rtol=1e-4)
    # Only process 0 writes logs.
    records = (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in records if "train/loss" in json.loads(r)]) == 12


def test_two_process_checkpoint_resumes_in_one_process(tmp_path):
    _local(tmp_path / "full", "--config.max_steps=7", "--config.checkpoint_every_steps=1")
    _local(tmp_path / "cut", "--config.max_steps=6", "--config.checkpoint_every_steps=1")
    _main(tmp_path / "cut", "--config.max_steps=7")  # one process, one device
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert len(full) == len(resumed) == 7
    np.testing.assert_allclose(resumed[6], full[6], rtol=1e-5)
