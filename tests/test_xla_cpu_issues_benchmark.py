"""benchmarks/xla_cpu_issues.py runs and shows each XLA:CPU behaviour it reproduces."""

import importlib.util

from conftest import ROOT


def test_xla_cpu_issues_smoke(capsys):
    path = ROOT / "benchmarks/xla_cpu_issues.py"
    spec = importlib.util.spec_from_file_location("xla_cpu_issues", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--batch", "2", "--size", "8", "--channels", "4", "--repeats", "1", "--blocks", "2"]
    bench.main([*args, "--fresh-mib", "16"])
    out = capsys.readouterr().out
    for row in ("weight gradient (dW)", "inputs in own buffers", "its input gradient"):
        assert row in out
    assert "lhs_dilate=2x2" in out  # the stride-2 input gradient XLA compiles
    assert "minor page faults per call" in out
