"""The ``bregflax`` console script dispatches to each module's command line."""

import os
import subprocess
import sys

import pytest

from bregflax import cli
from bregflax.training import xla_cpu


def test_usage_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2 and "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2 and "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_has_help(command):
    run = [sys.executable, "-m", "bregflax.cli", command, "--help"]
    env = {**os.environ, xla_cpu.OPT_OUT: "0"}  # no restart with huge pages just for --help
    result = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: bregflax {command}")
    if command in ("train", "evaluate"):
        assert "--workdir" in result.stdout


def test_predict_through_the_console_script(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "face.png"), np.full((48, 48), 120, np.uint8))
    run = [sys.executable, "-m", "bregflax.cli", "predict", str(tmp_path), "--no-detect"]
    result = subprocess.run(run + ["--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path,frame") and lines[1].endswith(",ok,")
