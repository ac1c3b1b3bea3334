"""Shared fixtures: paths, tiny configs, one tiny trained run shared by the whole session."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bregflax.training import xla_cpu

xla_cpu.apply()  # the trainer's XLA:CPU defaults, as the entry points apply them

# One persistent compilation cache for the session and every process it starts (set before
# jax is imported; subprocesses inherit it). Tiny test runs spend nearly all their time
# compiling the same train and eval steps: a run after the first with the same program
# loads them instead. A cache of your own in JAX_COMPILATION_CACHE_DIR is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="bregflax-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("BREGFLAX_COMPILE_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

ROOT = Path(__file__).resolve().parents[1]
FER2013_DIR = ROOT.parent / "shared" / "data" / "fer2013"

# The command-line form of shrink(demo): 6 steps per epoch, 2 epochs.
TINY_ARGS = (
    "--config.data.synthetic.num_train=192",
    "--config.data.synthetic.num_val=40",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.num_epochs=2",
    "--config.log_every_steps=1",
    "--config.progress_bar=False",
)


@pytest.fixture(scope="session", autouse=True)
def _session_tmpdir(tmp_path_factory):
    """Temporary files of the tests and their subprocesses go under pytest's own directory.

    tensorflow_datasets leaves an empty ``mkdtemp()`` directory behind each time it creates
    a builder for a dataset not prepared yet; here pytest's retention cleans them up.
    """
    path = str(tmp_path_factory.mktemp("tmpdir"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", path)
        mp.setattr(tempfile, "tempdir", path)
        yield


def _shrink(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.source = "synthetic"
    config.data.synthetic.num_train = 192
    config.data.synthetic.num_val = 40
    config.data.synthetic.num_test = 40
    config.batch_size = 32
    config.eval_batch_size = 32
    config.num_epochs = 2
    config.log_every_steps = 1
    config.progress_bar = False
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    """The command-line overrides that shrink the demo config as ``shrink`` does."""
    return TINY_ARGS


@pytest.fixture(scope="session")
def shrink() -> Callable[..., ml_collections.ConfigDict]:
    """``shrink(config, **{"dotted.key": value})``: a copy that runs in seconds on CPU."""
    return _shrink


@pytest.fixture
def demo_config() -> ml_collections.ConfigDict:
    """``configs/demo.py``, a fresh copy for each test."""
    from bregflax import configs

    return configs.get("demo")


@pytest.fixture
def data_config(tmp_path) -> Callable[..., ml_collections.ConfigDict]:
    """``data_config(**values)``: a ``config.data``, raw files in tmp/raw, builds in tmp/tfds."""

    def make(**values) -> ml_collections.ConfigDict:
        base = {"data_dir": str(tmp_path / "tfds"), "manual_dir": str(tmp_path / "raw")}
        return ml_collections.ConfigDict({**base, "strict": False, **values})

    return make


@pytest.fixture
def fer2013_dir() -> Path:
    if not (FER2013_DIR / "train.npz").exists():
        pytest.skip(f"real FER2013 not found at {FER2013_DIR} (train.npz, val.npz)")
    return FER2013_DIR


def _trained_run_config() -> ml_collections.ConfigDict:
    from bregflax import configs

    return _shrink(configs.get("demo"), checkpoint_every_steps=3, keep_checkpoints=4)


@pytest.fixture
def trained_run_config() -> ml_collections.ConfigDict:
    """A fresh copy of the config ``trained_run`` was trained with."""
    return _trained_run_config()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny demo run (both heads, 2 epochs of 6 steps, checkpoints at steps 3, 6, 9 and 12),
    trained once. Its config is ``trained_run_config``.

    Shared by the train, evaluate, predict, export and reproduce tests: treat it as read-only
    (evaluate's ``eval/`` reports are the exception).
    """
    from bregflax.training import train

    workdir = tmp_path_factory.mktemp("trained_run")
    train.train_and_evaluate(_trained_run_config(), workdir)
    return workdir


@pytest.fixture(scope="session")
def read_metric() -> Callable[..., np.ndarray]:
    """``read_metric(workdir, key="train/loss")``: that metric's values in ``metrics.jsonl``."""

    def read(workdir: Path, key: str = "train/loss") -> np.ndarray:
        lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
        return np.array([r[key] for r in map(json.loads, lines) if key in r])

    return read


@pytest.fixture(scope="session")
def run_main() -> Callable[..., subprocess.CompletedProcess]:
    """``run_main(workdir, *args, env=None, wait=True, check=True)``: ``python -m bregflax.main``
    on the demo config shrunk by TINY_ARGS; ``wait=False`` returns the Popen."""

    def run(workdir: Path, *args: str, env=None, wait=True, check=True):
        cmd = [sys.executable, "-m", "bregflax.main", "--config=configs/demo.py"]
        cmd += [f"--workdir={workdir}", *TINY_ARGS, *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if not wait:
            return subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    return run


@pytest.fixture(scope="session")
def final_params() -> Callable[..., dict]:
    """``final_params(workdir, config)``: the parameters of the run's latest checkpoint, as
    numpy arrays (``config`` gives the structure: the run's own, or one of the same model)."""
    from bregflax.training import checkpoints

    def params(workdir: Path, config: ml_collections.ConfigDict) -> dict:
        manager = checkpoints.manager(workdir, config)
        template = checkpoints.abstract_state(config)
        return jax.device_get(
            checkpoints.restore_state(manager, manager.latest_step(), template).params
        )

    return params


@pytest.fixture(scope="session")
def assert_close_to_scale() -> Callable[..., None]:
    """``assert_close_to_scale(a, b, rel=1e-4)``: equal within ``rel`` of ``a``'s largest
    magnitude plus 1e-5, for parameters reached by float sums in another order.

    Rounding of gradient sums that cancel (BatchNorm offsets, early H3 blocks) moves single
    elements of a first update by about 2e-5, against parameters of order 0.1.
    """

    def check(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
        np.testing.assert_allclose(b, a, rtol=0, atol=rel * float(np.abs(a).max()) + 1e-5)

    return check
