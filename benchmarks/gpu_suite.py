"""The prepared GPU run behind ``scripts/gpu_run.sh``: every measurement that needs a GPU,
in one process, each stage under a share of one time budget.

    python -m benchmarks.gpu_suite --out=DIR [--scale=full|test] [--budget-s=S]
        [--data=DIR] [--work=DIR] [--epochs=N] [--train-dtype=auto|float32|bfloat16]

Stages, in order (``STAGES``), each started only while its share of the budget is left and
stopped by a time guard (benchmarks/gpu_guard.py) at the end of its share; each is recorded
as ``running`` when it starts and rewrites ``DIR/results.json`` and ``DIR/report.md``
(benchmarks/gpu_report.py) when it ends, so a run cut short keeps what finished; a stage that
fails (status ``error``) or overruns (``timeout``) leaves the others to run; the exit status
is 1 when one failed, else 3 when one overran, else 0. ``--mark-killed=REASON`` marks the
stage a killed run left ``running`` as ``killed`` (scripts/gpu_run.sh runs it after
``timeout`` ends a scale):

* ``env``: devices, versions, the host (here);
* ``check``, ``throughput``, ``pipeline``: benchmarks/gpu_measure.py;
* ``plan``, ``table2_*``, ``weights``: Table II on FER2013 and the packaged BReGNet39,
  benchmarks/gpu_table2.py.

``--scale=test`` runs the same code with BReGNetTiny, small batches and tiny arrays data
drawn from the synthetic faces, on whatever device there is (the slow test suite runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import gpu_guard, gpu_measure, gpu_report, gpu_table2  # noqa: E402
from bregflax import configs  # noqa: E402
from bregflax import data as data_lib  # noqa: E402
from bregflax.data import arrays  # noqa: E402
from bregflax.training import xla_cpu

DEFAULT_DATA = Path(".carry") / "fer2013"  # scripts/gpu_prepare.sh writes it
FAILED = ("error", "killed")  # stage statuses that fail the run (exit 1)
EXIT_TIMEOUT = 3  # no stage failed, but one was stopped by its time guard
# A stage's guard is never shorter than this (or MIN_GUARD_DEFAULT_S), unless the budget ends
# sooner: no guard outlasts the budget (scripts/gpu_run.sh's `timeout` allows a little more).
MIN_GUARD_S = {"env": 30.0, "check": 30.0}
MIN_GUARD_DEFAULT_S = 5.0
VERSIONS = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain", "ml_collections",
    "tensorboardX", "opencv-python-headless", "torch",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scale:
    """What one ``--scale`` measures; ``table`` is the experiment grid's scale token."""

    table: str
    budget_s: float
    models: tuple[str, ...]
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    repeats: int
    matmul_n: int
    check_batch: int
    pipeline_batches: int
    epochs: int  # 0: as many as the budget fits, at least min_epochs
    min_epochs: int
    max_epochs: int
    eval_repeats: int  # skew-normalizing under-samplings


SCALES = {
    "full": Scale("paper", 510, ("BReGNet39", "ResNet110"), (128, 256), ("float32", "bfloat16"),
                  20, 8192, 8, 400, 0, 30, 100, 200),
    "test": Scale("test", 300, ("BReGNetTiny",), (32,), ("float32", "bfloat16"),
                  3, 256, 8, 4, 2, 1, 2, 10),
}  # fmt: skip


class Suite:
    """The run's settings, clock and results; ``save`` rewrites results.json and report.md."""

    def __init__(self, args: argparse.Namespace):
        self.start = time.perf_counter()
        self.scale = SCALES[args.scale]
        self.budget_s = args.budget_s or self.scale.budget_s
        self.out = Path(args.out)
        self.work = Path(args.work or tempfile.mkdtemp(prefix="bregflax-gpu-"))
        self.data_dir = Path(args.data) if args.data else None
        self.threads = os.cpu_count() or 1
        self.args = args
        self.results: dict = {
            "scale": args.scale,
            "budget_s": self.budget_s,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "stages": {},
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def data_path(self) -> Path:
        """The arrays folder: ``--data``, .carry/fer2013 at full scale, work/data at test."""
        if self.data_dir is None:
            self.data_dir = self.work / "data" if self.scale.table == "test" else DEFAULT_DATA
        return self.data_dir

    def data(self) -> Path:
        """The arrays folder, checked (train/ and val/); at the test scale without ``--data``,
        tiny arrays drawn from the synthetic faces are written there first."""
        path = self.data_path()
        if self.scale.table == "test" and not self.args.data and not path.exists():
            tiny_arrays(path)
        if not (path / "train").exists() and not (path / "train.npz").exists():
            raise data_lib.DatasetNotFoundError(
                f"no FER2013 arrays in {self.data_dir}: run scripts/gpu_prepare.sh here and "
                "name .carry in the run's carry"
            )
        return path

    def config(self, arch: str, loss: str = "regular", dtype: str = "float32", batch: int = 0):
        """Table II's config of ``arch`` and ``loss`` at this scale, on the arrays source."""
        config = configs.get("table2", f"fer2013,{arch},{loss},{self.scale.table}")
        config.data.source = "arrays"
        config.data.arrays.dir = str(self.data_path())
        config.data.num_threads = self.threads
        config.half_precision = dtype == "bfloat16"
        config.progress_bar = False
        config.batch_size = batch or config.batch_size
        return config

    def run(self, name: str, fn, start_by: float, end_by: float) -> None:
        """Runs stage ``fn(self)`` unless the clock is past ``start_by`` (a fraction of the
        budget), under a time guard that stops it at ``end_by``; a stage that returns a string
        was skipped, for that reason."""
        now = self.elapsed()
        if now >= start_by * self.budget_s:
            record = {"status": "skipped", "reason": f"no time left at {now:.0f} s"}
        else:
            share = end_by * self.budget_s - now
            guard_s = min(max(share, MIN_GUARD_S.get(name, MIN_GUARD_DEFAULT_S)), self.left())
            self.results["stages"][name] = {"status": "running", "guard_s": round(guard_s, 1)}
            self.save()
            began = time.perf_counter()
            print(f"[{now:6.1f} s] stage {name} (guard {guard_s:.0f} s)", flush=True)
            record = {"status": "ok"}
            try:
                with gpu_guard.time_guard(guard_s, f"stage {name}'s time guard"):
                    gpu_guard.fault(name)
                    reason = fn(self)
                if isinstance(reason, str):
                    record = {"status": "skipped", "reason": reason}
            except gpu_guard.TimeUp as e:  # the stage overran: what it saved so far stays
                record = {"status": "timeout", "reason": str(e)}
                print(f"[{self.elapsed():6.1f} s] stage {name}: {e}", flush=True)
            except Exception as e:  # a stage that fails leaves the others to run
                traceback.print_exc()
                record = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
            record["seconds"] = round(time.perf_counter() - began, 2)
            record["guard_s"] = round(guard_s, 1)
        self.results["stages"][name] = record
        self.save()

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        write_results(self.out, self.results)


def write_results(out: Path, results: dict) -> None:
    """``out/results.json`` and ``out/report.md``, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("results.json", json.dumps(results, indent=1, default=_plain) + "\n"),
        ("report.md", gpu_report.render(results)),
    ):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


def mark_killed(out: Path, reason: str, scale: str = "?") -> list[str]:
    """Marks the stages ``out/results.json`` left ``running`` as ``killed`` for ``reason``
    (a run killed before its first stage gets a results.json that says so)."""
    path = out / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
    else:
        results = {"scale": scale, "budget_s": 0, "started": "?", "stages": {}}
    killed = [n for n, r in results["stages"].items() if r["status"] == "running"]
    for name in killed:
        results["stages"][name].update(status="killed", reason=reason)
    results["killed"] = reason
    write_results(out, results)
    return killed


def _plain(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def tiny_arrays(folder: Path, n_train: int = 160, n_val: int = 64) -> Path:
    """Synthetic faces written as the arrays source's WebP sheets, train/ and val/."""
    config = configs.get("default").data
    config.synthetic.num_train, config.synthetic.num_val = n_train, n_val
    for split in ("train", "val"):
        source = data_lib.load("synthetic", split, config).source
        records = [source[i] for i in range(len(source))]
        images = np.stack([r["image"] for r in records])
        labels = np.array([r["label"] for r in records], np.int32)
        arrays.write_split(folder / split, images, labels=labels)
    return folder


# --------------------------------------------------------------------------- env


def environment(suite: Suite) -> None:
    versions = {}
    for dist in VERSIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    devices = [{"id": d.id, "platform": d.platform, "kind": d.device_kind} for d in jax.devices()]
    env = {
        "matmul_precision": jax.config.jax_default_matmul_precision,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": devices,
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "data": str(suite.data_path()),
        "data_found": suite.data_path().exists(),
    }
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
        smi = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    suite.results["env"] = env


# --------------------------------------------------------------------------- main

STAGES = (  # name, function, the fractions of the budget by which it starts and is stopped
    ("env", environment, 0.02, 0.06),
    *gpu_measure.STAGES,
    *gpu_table2.STAGES,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="results.json, report.md, the tars")
    p.add_argument("--scale", default="full", choices=sorted(SCALES))
    p.add_argument("--budget-s", type=float, default=0, help="default: the scale's")
    p.add_argument("--data", default="", help="arrays folder (default: .carry/fer2013)")
    p.add_argument("--work", default="", help="training runs and caches (default: a tmp dir)")
    p.add_argument("--epochs", type=int, default=0, help="Table II epochs (default: the scale's)")
    p.add_argument("--train-dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument(
        "--matmul-precision", default="default", choices=["default", "high", "highest"],
        help="jax_default_matmul_precision of the throughput and Table II steps: 'default' lets "
        "float32 convolutions and matmuls use TF32 on NVIDIA GPUs, as PyTorch's cuDNN does "
        "(torch.backends.cudnn.allow_tf32); the check sets its own",
    )  # fmt: skip
    p.add_argument("--mark-killed", default="", metavar="REASON",
                   help="only mark the stages left running in --out as killed")  # fmt: skip
    return p.parse_args(argv)


def main(argv=None) -> int:
    xla_cpu.apply()  # before jax computes anything (the CPU backend of the check trains too)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # PyTorch shares the GPU
    args = parse_args(argv)
    if args.mark_killed:
        killed = mark_killed(Path(args.out), args.mark_killed, args.scale)
        print(f"marked {killed or 'no stage'} killed in {args.out}: {args.mark_killed}")
        return 0
    # Deliberate, not left to the backend: on NVIDIA GPUs "default" is TF32 for float32.
    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    gpu_guard.scale = args.scale
    suite = Suite(args)
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the training runs reuse the steps
        jax.config.update("jax_compilation_cache_dir", str(suite.work / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    for name, fn, start_by, end_by in STAGES:
        suite.run(name, fn, start_by, end_by)
    stages = suite.results["stages"]
    errors = [n for n, r in stages.items() if r["status"] in FAILED]
    timeouts = [n for n, r in stages.items() if r["status"] == "timeout"]
    print(
        f"[{suite.elapsed():6.1f} s] done; wrote {suite.out}; failed stages: {errors or 'none'}; "
        f"stopped by their time guard: {timeouts or 'none'}"
    )
    return 1 if errors else EXIT_TIMEOUT if timeouts else 0


if __name__ == "__main__":
    code = main()
    # Everything is written. Work a time guard abandoned (train steps already dispatched, the
    # input pipeline's threads) would otherwise hold the exit until it drains: minutes on a
    # CPU (seen in the rehearsal), forever after a stuck kernel.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
