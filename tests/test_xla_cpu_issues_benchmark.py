"""benchmarks/xla_cpu_issues.py runs and shows each XLA:CPU behaviour it reproduces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import xla_cpu_issues as bench


def test_own_buffer_is_the_identity_and_survives_compilation():
    x = np.arange(2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    nan_first = x.copy()
    nan_first[0, 0, 0, 0] = np.nan  # the one input on which its loop runs (once)
    for value in (x, nan_first):
        np.testing.assert_array_equal(jax.jit(bench.own_buffer)(value), value)
    text = jax.jit(lambda v: bench.own_buffer(jnp.sin(v)) * 2).lower(x).compile().as_text()
    assert " while(" in text


def test_transposes_in_lists_the_compiled_transposes():
    x = jnp.ones((2, 3, 4, 5))
    (line,) = bench.transposes_in(lambda v: jnp.transpose(v, (3, 1, 2, 0)) + 1, x)
    assert "f32[5,3,4,2]" in line
    assert bench.transposes_in(lambda v: v * 2, x) == []


@pytest.mark.slow
def test_xla_cpu_issues_smoke(capsys):
    args = ["--batch", "2", "--size", "8", "--channels", "4", "--repeats", "1", "--blocks", "2"]
    bench.main([*args, "--fresh-mib", "16"])
    out = capsys.readouterr().out
    for row in ("weight gradient (dW)", "inputs in own buffers", "its input gradient"):
        assert row in out
    assert "lhs_dilate=2x2" in out  # the stride-2 input gradient XLA compiles
    assert "minor page faults per call" in out
