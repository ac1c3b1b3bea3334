"""``bregflax export``: the jax.export file equals the Predictor and needs only jax."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from bregflax import export, predict, runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.bin"
    assert export.main(["--model", "fer2013", "--out", str(path), "--platforms", "cpu"]) == 0
    return path


def test_round_trip_equals_the_predictor(exported):
    model = runtime.ExportedModel.load(exported)
    p = predict.Predictor.from_pretrained("fer2013")
    assert model.class_names == p.class_names and model.header["platforms"] == ["cpu"]
    rng = np.random.default_rng(0)
    for n in (1, 5, 300):  # one symbolic batch dimension, any size
        faces = rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)
        np.testing.assert_allclose(
            model(faces)["probs"], p.predict_faces(faces)["probs"], atol=1e-5
        )


def test_runtime_needs_only_jax(exported):
    source = str(ROOT / "bregflax" / "runtime.py")
    code = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('rt', {source!r})\n"
        "rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)\n"
        f"m = rt.ExportedModel.load({str(exported)!r})\n"
        "out = m(m.to_input(np.zeros((2, 96, 96, 3), np.uint8)))\n"
        "assert out['probs'].shape == (2, 7), out\n"
        "heavy = ('flax', 'optax', 'orbax', 'bregflax', 'cv2')\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_bad_files(tmp_path, exported):
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a bregflax export"):
        runtime.ExportedModel.load(path)
    model = runtime.ExportedModel.load(exported)
    with pytest.raises(ValueError, match="uint8"):
        model(np.zeros((1, 48, 48, 1), np.float32))
