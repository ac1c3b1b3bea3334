"""benchmarks/fresh_process_step.py times one framework's step and reports its CPU costs."""

import mmap

import numpy as np
import pytest

from benchmarks import fresh_process_step as bench
from benchmarks import throughput

PAGE = mmap.PAGESIZE


def _page_toucher(pages: int) -> throughput.Runner:
    """A step that maps ``pages`` fresh pages (no huge pages), writes each once, unmaps them:
    ``pages`` minor page faults a step, and system time."""

    def step() -> None:
        memory = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE)  # anonymous
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        view = np.frombuffer(memory, np.uint8)
        view[::PAGE] = 1
        del view
        memory.close()

    return throughput.Runner("pages", step, batch=8)


def test_measure_counts_each_steps_page_faults_and_cpu_time(monkeypatch, capsys):
    pages = 8192  # 32 MiB with 4 KiB pages
    monkeypatch.setattr(bench, "runner", lambda model, framework, batch: _page_toucher(pages))
    m = bench.main(["--model", "BReGNetTiny", "--steps", "3"])
    assert pages <= m["minor_faults"] < 1.2 * pages  # per step, not per run, not zero
    assert m["user_ms"] + m["sys_ms"] > 0
    assert m["images_per_s"] > 0 and m["wall_ms"] > 0
    assert f"{m['minor_faults']:,.0f} minor page faults" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_fresh_process_step_smoke(framework, capsys):
    if framework == "torch":
        pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    args = ["--model", "BReGNetTiny", "--framework", framework, "--batch", "4", "--steps", "2"]
    m = bench.main(args)
    assert m["images_per_s"] > 0 and m["wall_ms"] > 0
    assert m["user_ms"] + m["sys_ms"] > 0
    assert "minor page faults" in capsys.readouterr().out
