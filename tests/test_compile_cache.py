"""The persistent compilation cache: where it lives, when it is off, and that a second
``bregflax predict`` loads its program instead of compiling it."""

import os
import subprocess
import sys
from pathlib import Path

import cv2

from bregflax import compile_cache
from bregflax.data import synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_the_cache_folder_follows_the_environment(tmp_path):
    assert compile_cache.default_dir({compile_cache.ENV: "/c"}) == "/c"
    assert compile_cache.default_dir({compile_cache.ENV: ""}) == ""
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x"}) == "/x/bregflax/jax"
    home = compile_cache.default_dir({})
    assert home == os.path.join(os.path.expanduser("~"), ".cache", "bregflax", "jax")
    assert compile_cache.enable("") is False
    (tmp_path / "file").write_text("not a folder")
    assert compile_cache.enable(tmp_path / "file" / "cache") is False


def test_a_second_predict_loads_its_program_from_the_cache(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, face in enumerate(synthetic.make_faces(4, seed=0)["image"]):
        cv2.imwrite(str(photos / f"f{k}.png"), face)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), compile_cache.ENV: str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    outs = []
    for run in range(2):
        out = tmp_path / f"rows{run}.csv"
        cmd = [sys.executable, "-m", "bregflax.inference.predict", str(photos), "--no-detect"]
        subprocess.run([*cmd, "--out", str(out), "--no-progress"], env=env, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
        entries = sorted(p.name for p in cache.iterdir())
        assert entries, "nothing was kept"
        outs.append((entries, out.read_text()))
    assert outs[0] == outs[1]  # nothing new compiled, the same rows
