"""benchmarks/inference.py runs and reports every figure it promises."""

import importlib.util

from conftest import ROOT


def test_inference_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("inference", ROOT / "benchmarks/inference.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(
        ["--models", "shipped", "--repeats", "2", "--json", str(tmp_path / "r.json")]
    )
    shipped = results["models"]["shipped"]
    assert set(shipped["images_per_s"]) == set(bench.BATCHES)
    assert all(v > 0 for v in shipped["images_per_s"].values())
    assert shipped["latency_ms"]["p90"] >= shipped["latency_ms"]["median"] > 0
    assert "b=256 img/s" in capsys.readouterr().out and (tmp_path / "r.json").exists()
