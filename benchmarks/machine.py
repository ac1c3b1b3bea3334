"""The machine a speed figure was measured on: CPU model and cores, jax, jaxlib and Python.

Speed figures depend on the CPU as much as on the code, so every benchmark prints this line
first and keeps it in its JSON.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model name", "cpu model", "Processor") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> str:
    """One line: "CPU <model>, <n> cores; jax <v>, jaxlib <v>; Python <v>"."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPU {cpu_model()}, {cores} cores; jax {_version('jax')}, jaxlib {_version('jaxlib')}; "
        f"Python {platform.python_version()}"
    )
