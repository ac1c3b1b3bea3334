"""benchmarks/detect_accuracy.py runs and its figures are consistent."""

import importlib.util

import pytest


@pytest.mark.slow
def test_detect_accuracy_benchmark_smoke(tmp_path, capsys, repo_root):
    path = repo_root / "benchmarks" / "detect_accuracy.py"
    spec = importlib.util.spec_from_file_location("detect_accuracy_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if not bench.FER2013_VAL.exists():
        pytest.skip(f"FER2013 PublicTest not at {bench.FER2013_VAL}")
    results = bench.main(["--limit", "12", "--sides", "192", "--json", str(tmp_path / "r.json")])
    (flat, scene) = results["settings"]
    assert (flat["setting"], scene["setting"]) == ("flat", "scene")
    for r in (flat, scene):
        assert 0 < r["found"] <= 1 and r["faces"] == 12
        # a missed face counts as wrong, so accuracy over all faces <= over the faces found
        assert r["accuracy_all"] == pytest.approx(r["found"] * r["accuracy_found"])
        low, high = r["difference_95"]
        assert r["difference"] == pytest.approx(r["accuracy_found"] - r["crop_accuracy_found"])
        assert low <= r["difference"] <= high or low != low  # nan when one face was found
    assert "| flat | 192 |" in capsys.readouterr().out
