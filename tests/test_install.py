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
        "bregflax/weights/yunet/yunet_n_640_640.onnx",
        "bregflax/weights/yunet/LICENSE",
        "bregflax/weights/yunet/README.md",
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


def test_default_predict_finds_faces_with_the_shipped_yunet_offline(installed, fer2013_dir):
    """The default ``bregflax predict`` (no --detector) finds a face in a photo with the YuNet
    file inside the installed wheel, with every proxy pointing nowhere: nothing is fetched."""
    import cv2

    env_dir, outside, env = installed
    offline = {**env, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    offline.update(http_proxy=offline["HTTP_PROXY"], https_proxy=offline["HTTPS_PROXY"])
    python = env_dir / "bin" / "python"
    code = "import bregflax.inference.yunet as y; print(y.MODEL_PATH); y.network()"
    where = Path(run([python, "-c", code], outside, offline).stdout.strip())
    assert where.is_file() and where.resolve().is_relative_to(env_dir.resolve()), where

    face = np.load(fer2013_dir / "val.npz")["images"][3]
    photo = np.full((480, 640, 3), 110, np.uint8)
    photo[100:260, 200:360] = cv2.resize(face, (160, 160))[..., None]
    cv2.imwrite(str(outside / "photo.png"), photo)
    out = outside / "rows.jsonl"
    run([env_dir / "bin" / "bregflax", "predict", "--no-progress", "--out", out, "photo.png"],
        outside, offline)  # fmt: skip
    import json

    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["status"] == "ok" and row["source"] == "detector", row
    assert len(row["landmarks"]) == 5  # only YuNet gives landmarks: the default is YuNet
    x, y, w, h = row["box"]
    assert abs(x + w / 2 - 280) < 30 and abs(y + h / 2 - 180) < 30 and 120 < w < 200, row
