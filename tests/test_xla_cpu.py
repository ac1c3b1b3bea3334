"""XLA:CPU defaults: added once, never over a user's own value, and really applied."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from bregflax import xla_cpu

SETTING = f"{xla_cpu.FLAG}={xla_cpu.VALUE}"


def test_added_to_other_flags_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    flags = xla_cpu.with_defaults(env, "0.10.2")
    assert flags == f"--xla_force_host_platform_device_count=4 {SETTING}"
    assert xla_cpu.with_defaults({"XLA_FLAGS": flags}, "0.10.2") is None
    assert xla_cpu.with_defaults({}, "0.10.2") == SETTING


@pytest.mark.parametrize(
    "env, version",
    [
        ({"XLA_FLAGS": f"{xla_cpu.FLAG}=LIBRARY_FUSION_TYPE_DOT"}, "0.10.2"),  # the user's own
        ({xla_cpu.OPT_OUT: "0"}, "0.10.2"),
        ({}, "0.7.0"),  # not measured there; XLA may not know the flag
    ],
)
def test_left_alone(env, version):
    assert xla_cpu.with_defaults(env, version) is None


def _conv_program(env: dict, module: str = "bregflax.train") -> str:
    """The compiled HLO of a conv, in a fresh process that imports ``module`` first."""
    code = (
        f"import {module}, jax, jax.numpy as jnp\n"
        "x, w = jnp.ones((8, 24, 24, 32)), jnp.ones((3, 3, 32, 32))\n"
        "f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
        " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
        "print(jax.jit(f).lower(x, w).compile().as_text())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)} | env
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(
    not xla_cpu.metadata.version("jaxlib").startswith(xla_cpu.TESTED_JAXLIB),
    reason="the defaults apply only to the jaxlib versions they were measured on",
)
def test_importing_the_trainer_moves_convolutions_off_ynnpack():
    assert "ynn_fusion" not in _conv_program({})
    assert "ynn_fusion" in _conv_program({xla_cpu.OPT_OUT: "0"})
    # Inference alone keeps XLA's default: the shipped model's batches run faster with it.
    assert "ynn_fusion" in _conv_program({}, "bregflax.predict")
