"""launch/tpu_pod.sh --dry-run: every command it would run, per TPU generation, none run."""

import os
import subprocess

import pytest

ARGS = ["--config=configs/affectnet.py", "--workdir=gs://bucket/runs/a", "--config.batch_size=2048"]


def _tpu_pod(repo_root, tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script with a ``gcloud`` on PATH that records each call in tmp_path/calls."""
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    fake.chmod(0o755)
    base = {"TPU_NAME": "brt", "ZONE": "us-central2-b", "REPO": "https://example.org/b.git"}
    environ = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", **base, **env}
    cmd = ["bash", "launch/tpu_pod.sh", *args]
    return subprocess.run(cmd, cwd=repo_root, env=environ, capture_output=True, text=True)


@pytest.mark.parametrize(
    "accelerator, runtime",
    [("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v6e-8", "v2-alpha-tpuv6e"), ("v4-32", None)],
)
def test_dry_run_prints_every_command_for_the_generation(repo_root, tmp_path, accelerator, runtime):
    out = _tpu_pod(repo_root, tmp_path, "--dry-run", *ARGS, ACCELERATOR=accelerator)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "calls").exists()  # nothing ran
    text = out.stdout
    runtime = runtime or "tpu-ubuntu2204-base"
    assert f"--accelerator-type {accelerator} --version {runtime}" in text
    assert "gcloud compute tpus tpu-vm describe brt --zone us-central2-b" in text
    assert "uv venv -q --allow-existing --python 3.12 ~/venv" in text  # not the image's 3.10
    assert "uv pip install -q --python ~/venv/bin/python -e '.[gcs]' 'jax[tpu]'" in text  # gs://
    run = next(line for line in text.splitlines() if "-m bregflax.main" in line)
    assert run.startswith("cd bregflax && setsid nohup ~/venv/bin/python -m bregflax.main")
    assert "--multihost " + " ".join(ARGS) in run
    assert "> ~/bregflax-train.log 2>&1 < /dev/null &" in run  # detached, logged
    assert text.count("--worker=all") == 2


def test_dry_run_of_the_logs(repo_root, tmp_path):
    out = _tpu_pod(repo_root, tmp_path, "--dry-run", "--logs", "50")
    assert out.returncode == 0 and "tail -n 50 ~/bregflax-train.log" in out.stdout


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--workdir=runs/a"], {}, "--workdir=gs://BUCKET/PATH is needed"),
        (ARGS, {"ACCELERATOR": "v9-8"}, "unknown ACCELERATOR v9-8"),
    ],
)
def test_unusable_launches_stop_before_gcloud(repo_root, tmp_path, args, env, message):
    out = _tpu_pod(repo_root, tmp_path, *args, **env)
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "calls").exists()
