"""One framework's train step, alone in this process: images/s, CPU time and page faults.

python benchmarks/fresh_process_step.py --model BReGNet39 --framework jax|torch [--steps 4]

The steadier comparison (docs/performance.md): one network and one framework per fresh
process, run back to back. It builds the step as ``throughput.py`` does, warms it up, runs
one untimed step, then times ``--steps`` steps and prints the median images/s, and per step
the wall, user and system time and the minor page faults. This script does not restart
itself with glibc's huge pages: set ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (or leave it
out) to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine  # noqa: E402
from benchmarks import throughput as tp  # noqa: E402
from bregflax.training import xla_cpu  # noqa: E402


def runner(model: str, framework: str, batch: int) -> tp.Runner:
    if framework == "jax":
        return tp.jax_train_runner(model, "float32", batch)
    _, flax_model, variables = tp.jax_infer_runner(model, "float32", 1)
    return tp.torch_runners(flax_model, variables, batch, "train")[-1]  # channels_last


def measure(model: str, framework: str, batch: int = 64, steps: int = 4) -> dict:
    r = runner(model, framework, batch)
    r.warm_up()
    r.step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        r.run_once()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "model": model,
        "framework": framework,
        "images_per_s": batch / statistics.median(r.times),
        "wall_ms": 1e3 * wall / steps,
        "user_ms": 1e3 * (after.ru_utime - before.ru_utime) / steps,
        "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / steps,
        "minor_faults": (after.ru_minflt - before.ru_minflt) / steps,
    }


def main(argv=None) -> dict:
    xla_cpu.apply()  # the trainer's XLA:CPU flags, before jax computes anything
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="BReGNetCPU")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    print(machine.describe(), flush=True)
    m = measure(args.model, args.framework, args.batch, args.steps)
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    print(
        f"{m['model']} {m['framework']} GLIBC_TUNABLES={tunables!r}: "
        f"{m['images_per_s']:.1f} images/s; per step wall {m['wall_ms']:.0f} ms, "
        f"user {m['user_ms']:.0f} ms, sys {m['sys_ms']:.0f} ms, "
        f"{m['minor_faults']:,.0f} minor page faults"
    )
    return m


if __name__ == "__main__":
    main()
