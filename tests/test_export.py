"""``bregflax export``: the jax.export file equals the Predictor and needs only jax."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from bregflax.inference import export, runtime
from bregflax.inference.predictor import Predictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model.bin"
    assert export.main(["--model", "fer2013", "--out", str(path), "--platforms", "cpu"]) == 0
    return path


def test_round_trip_equals_the_predictor(exported):
    model = runtime.ExportedModel.load(exported)
    p = Predictor.from_pretrained("fer2013")
    assert model.class_names == p.class_names and model.header["platforms"] == ["cpu"]
    assert model.header["flip"] == p.flip  # the shipped model averages with the mirror image
    # The batch dimension is symbolic: 37 here, 2 in test_runtime_needs_only_jax, 1 below.
    faces = np.random.default_rng(0).integers(0, 256, (37, 48, 48, 1), dtype=np.uint8)
    np.testing.assert_allclose(model(faces)["probs"], p.predict_faces(faces)["probs"], atol=1e-5)
    # BatchNorm is folded into the convolutions, as in the Predictor: the same outputs as
    # the network computed as trained, and no normalization left in the program.
    assert model.header["batchnorm"] == "folded into the convolutions"
    unfolded = dataclasses.replace(p, fold=False).predict_faces(faces)["probs"]
    np.testing.assert_allclose(model(faces)["probs"], unfolded, atol=1e-5)
    text = model.exported.mlir_module()
    assert "rsqrt" not in text and text.count("stablehlo.convolution") == 16 * 2  # + mirror


def test_runtime_needs_only_jax(exported, repo_root):
    source = str(repo_root / "bregflax" / "inference" / "runtime.py")
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


def test_export_from_a_training_run_keeps_both_heads(trained_run, tmp_path):
    path = tmp_path / "run.bin"
    args = ["--workdir", str(trained_run), "--checkpoint", "latest", "--out", str(path)]
    assert export.main([*args, "--platforms", "cpu"]) == 0
    model = runtime.ExportedModel.load(path)
    assert model.header["outputs"] == ["probs", "va"]
    assert model.header["source"]["step"] == 12
    p = Predictor.from_workdir(trained_run, "latest")
    faces = np.random.default_rng(1).integers(0, 256, (1, 48, 48, 1), dtype=np.uint8)
    got, want = model(faces), p.predict_faces(faces)
    for key in ("probs", "va"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
