"""benchmarks/inference.py runs and reports every figure it promises."""

import importlib.util
import json


def test_inference_benchmark_smoke(tmp_path, capsys, repo_root):
    path = repo_root / "benchmarks" / "inference.py"
    spec = importlib.util.spec_from_file_location("inference_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--models", "shipped", "--repeats", "2", "--batches", "1,8"]
    results = bench.main([*args, "--json", str(tmp_path / "r.json")])
    shipped = results["models"]["shipped"]
    assert set(shipped["images_per_s"]) == {1, 8} and set(bench.BATCHES) >= {1, 8, 64, 256}
    assert all(v > 0 for v in shipped["images_per_s"].values())
    assert shipped["latency_ms"]["p90"] >= shipped["latency_ms"]["median"] > 0
    assert shipped["params"] == 704_935  # the shipped BReGNetSmall (README)
    detection = results["detection"]
    assert detection["detect_ms"]["p90"] >= detection["detect_ms"]["median"] > 0
    out = capsys.readouterr().out
    assert "b=8 img/s" in out and "b=64" not in out and "Haar detection" in out
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["models"]["shipped"]["images_per_s"].keys() == {"1", "8"}
