"""benchmarks/detect_accuracy.py runs and its figures are consistent."""

import importlib.util
import math

import pytest

FOUND_ONLY = {"accuracy_found", "crop_accuracy_found", "difference", "agreement"}


@pytest.mark.slow
def test_detect_accuracy_benchmark_smoke(tmp_path, capsys, repo_root):
    path = repo_root / "benchmarks" / "detect_accuracy.py"
    spec = importlib.util.spec_from_file_location("detect_accuracy_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if not bench.FER2013_VAL.exists():
        pytest.skip(f"FER2013 PublicTest not at {bench.FER2013_VAL}")
    cases = "flat/{side}/0/any/1,scene/96/30/edge/2"
    results = bench.main(
        ["--limit", "12", "--sides", "192", "--cases", cases, "--json", str(tmp_path / "r.json")]
    )
    got = [
        (r["setting"], r["side"], r["angle"], r["position"], r["mode"]) for r in results["settings"]
    ]
    modes = list(bench.MODES)
    assert got == [("flat", 192, 0, "any", m) for m in modes] + [
        ("scene", 96, 30, "edge", m) for m in modes
    ]
    for r in results["settings"]:
        assert 0 <= r["found"] <= 1 and r["faces"] == 12 * r["faces_per_image"]
        # no NaN slips through: only the found faces' figures may be missing, when none is
        for key, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                assert key in FOUND_ONLY and r["found"] == 0, (key, v, r)
        if not r["found"]:
            assert r["accuracy_all"] == 0
        # a missed face counts as wrong, so accuracy over all faces <= over the faces found
        if r["found"]:
            assert r["accuracy_all"] == pytest.approx(r["found"] * r["accuracy_found"])
            assert r["difference"] == pytest.approx(r["accuracy_found"] - r["crop_accuracy_found"])
        assert 0 <= r["boxes_on_no_face_per_image"] <= r["false_boxes_per_image"] + 1e-9
    by_mode = {r["mode"]: r for r in results["settings"][: len(modes)]}
    # The YuNet modes share one detection: the same faces found, the same boxes counted.
    assert len({(by_mode[m]["found"], by_mode[m]["false_boxes_per_image"]) for m in modes[1:]}) == 1
    assert "| flat | 192 | +0 | any | 1 | yunet |" in capsys.readouterr().out
