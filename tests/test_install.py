"""A wheel of bregflax, installed in a fresh venv, runs ``bregflax reproduce``, ``predict``
and ``evaluate`` from outside the repository: no command may need the source tree.

The fresh venv sees this venv's dependencies through a ``.pth`` file (a path line, so
this venv's own ``.pth`` files, the editable bregflax's among them, are not run) and gets
bregflax from the wheel only.
"""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory, repo_root):
    """(venv dir, outside dir, env) with the wheel installed in the venv."""
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels = root / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, repo_root],
        root,
        env,
    )
    (wheel,) = wheels.glob("bregflax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = {
        "bregflax/configs/__init__.py",
        "bregflax/configs/experiment.py",
        "bregflax/configs/table1.py",
        "bregflax/paper/published.py",
        "bregflax/weights/fer2013/params.msgpack",
        "bregflax/weights/fer2013/config.json",
        "bregflax/weights/fer2013/meta.json",
    }
    assert shipped <= names, shipped - names

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env
    )
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib.stdout.strip()) / "bregflax_test_deps.pth").write_text(ours + "\n")
    # --ignore-installed: never uninstall the editable bregflax that this venv's pip can see
    pip = [python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel]
    run(pip, root, env)
    outside = root / "outside"
    outside.mkdir()
    where = run([python, "-c", "import bregflax; print(bregflax.__file__)"], outside, env)
    assert Path(where.stdout.strip()).resolve().is_relative_to(env_dir.resolve()), where.stdout
    assert not Path(where.stdout.strip()).resolve().is_relative_to(repo_root.resolve())
    return env_dir, outside, env


def test_reproduce_predict_and_evaluate_from_the_wheel(installed):
    env_dir, outside, env = installed
    bregflax = env_dir / "bin" / "bregflax"
    workdir = outside / "repro"
    args = ["--table=1", "--scale=test", "--only=fer2013,h3,regular", "--repeats=5"]
    run([bregflax, "reproduce", *args, f"--workdir={workdir}"], outside, env)
    table = (workdir / "table1.md").read_text()
    assert "| H3, regular |" in table and "68.74" in table
    run_dir = workdir / "test" / "fer2013_BReGNetTiny_h3_regular_seed0"
    assert (run_dir / "result.json").exists()

    from PIL import Image

    face = outside / "face.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(pixels).save(face)
    predicted = run([bregflax, "predict", "--no-detect", "--no-progress", face], outside, env)
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2 and "face.png" in lines[1], predicted.stdout

    evaluated = run([bregflax, "evaluate", f"--workdir={run_dir}"], outside, env)
    assert (run_dir / "eval" / "val.json").exists(), evaluated.stdout
