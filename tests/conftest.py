"""Shared fixtures: the repository root, the real FER2013 folder, and tiny configs."""

import importlib.util
import tempfile
from pathlib import Path

import ml_collections
import pytest

ROOT = Path(__file__).resolve().parents[1]
FER2013_DIR = ROOT.parent / "shared" / "data" / "fer2013"


@pytest.fixture(scope="session", autouse=True)
def _session_tmpdir(tmp_path_factory):
    """Temporary files of the tests and their subprocesses go under pytest's own directory.

    tensorflow_datasets leaves an empty ``mkdtemp()`` directory behind each time it creates
    a builder for a dataset not prepared yet (``DatasetInfo.initialize_from_bucket``), 44
    per run of this suite; here pytest's retention cleans them up instead of /tmp filling.
    """
    path = str(tmp_path_factory.mktemp("tmpdir"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", path)
        mp.setattr(tempfile, "tempdir", path)
        yield


def load_config(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """Loads ``configs/<name>.py`` as config_flags would (``arg`` is the text after ':')."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def tiny(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """Shrinks a config to seconds on CPU: small synthetic data, few steps, no bar."""
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


def data_config(tmp_path: Path, **values) -> ml_collections.ConfigDict:
    """A ``config.data`` for dataset builders: raw files in tmp/raw, builds in tmp/tfds."""
    base = {"data_dir": str(tmp_path / "tfds"), "manual_dir": str(tmp_path / "raw")}
    return ml_collections.ConfigDict({**base, "strict": False, **values})


@pytest.fixture
def fer2013_dir() -> Path:
    if not (FER2013_DIR / "train.npz").exists():
        pytest.skip(f"real FER2013 not found at {FER2013_DIR} (train.npz, val.npz)")
    return FER2013_DIR
