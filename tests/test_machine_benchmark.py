"""benchmarks/machine.py names the CPU and the jax a speed figure was measured with."""

import jax

from benchmarks import machine


def test_cpu_model_from_cpuinfo():
    info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8481C\n"
    assert machine.cpu_model(info) == "Intel(R) Xeon(R) 8481C"
    assert machine.cpu_model("")  # something, never empty


def test_describe_names_the_cpu_and_jax():
    line = machine.describe()
    assert line.startswith(f"CPU {machine.cpu_model()}, ")
    assert f"jax {jax.__version__}" in line and "Python 3." in line
