"""benchmarks/fresh_process_step.py times one framework's step and reports its CPU costs."""

import importlib.util

import pytest
from conftest import ROOT


def _bench():
    path = ROOT / "benchmarks/fresh_process_step.py"
    spec = importlib.util.spec_from_file_location("fresh_process_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_fresh_process_step_smoke(framework, capsys):
    if framework == "torch":
        pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    args = ["--model", "BReGNetTiny", "--framework", framework, "--batch", "4", "--steps", "2"]
    m = _bench().main(args)
    assert m["images_per_s"] > 0 and m["wall_ms"] > 0
    assert m["user_ms"] + m["sys_ms"] > 0 and m["minor_faults"] >= 0
    assert "minor page faults" in capsys.readouterr().out
