"""XLA:CPU defaults: added once, never over a user's own value, and really applied."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bregflax.training import xla_cpu

ROOT = Path(__file__).resolve().parents[1]

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


CONV_HLO = (
    "def conv_hlo(*args, **kwargs):\n"
    "    import jax, jax.numpy as jnp\n"
    "    x, w = jnp.ones((8, 24, 24, 32)), jnp.ones((3, 3, 32, 32))\n"
    "    f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
    " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
    "    print(jax.jit(f).lower(x, w).compile().as_text())\n"
    "    raise SystemExit(0)\n"
)


def _conv_program(env: dict, code: str) -> str:
    """The compiled HLO of a conv, in a fresh process that runs ``code`` first: ``code``
    calls ``conv_hlo()`` itself, or has an entry point call it in place of its work."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)} | env
    out = subprocess.run(
        [sys.executable, "-c", CONV_HLO + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


IMPORTS = (
    "import bregflax.training.train, bregflax.evaluation.evaluate, bregflax.main\n"
    "import bregflax.inference.predict\nconv_hlo()\n"
)
TRAIN = (
    "from bregflax import main\nfrom bregflax.training import train\n"
    "train.train_and_evaluate = conv_hlo\n"
    "main.main(['--config=configs/demo.py', '--workdir=unused'])\n"
)


@pytest.mark.skipif(
    not xla_cpu.metadata.version("jaxlib").startswith(xla_cpu.TESTED_JAXLIB),
    reason="the defaults apply only to the jaxlib versions they were measured on",
)
def test_the_trainer_moves_convolutions_off_ynnpack_and_imports_do_not():
    # Importing any module keeps XLA's default (inference alone is faster with it) ...
    assert "ynn_fusion" in _conv_program({}, IMPORTS)
    # ... and the training command changes it before jax starts.
    assert "ynn_fusion" not in _conv_program({}, TRAIN)


@pytest.mark.parametrize(
    "module, work, args",
    [
        ("main", "train.train_and_evaluate", ["--config=configs/demo.py", "--workdir=w"]),
        ("evaluation.evaluate", "evaluate_workdir", ["--workdir=w"]),
    ],
)
def test_entry_points_apply_the_defaults_first(module, work, args, monkeypatch):
    """main.main and evaluate.main call ``apply()`` before anything else (the subprocess
    test above shows that it then takes effect)."""
    import importlib

    class Stop(Exception):
        pass

    def work_stub(*args, **kwargs):
        calls.append("work")
        raise Stop

    entry = importlib.import_module(f"bregflax.{module}")
    calls = []
    monkeypatch.setattr(xla_cpu, "apply", lambda: calls.append("apply"))
    owner, _, name = work.rpartition(".")
    monkeypatch.setattr(getattr(entry, owner) if owner else entry, name, work_stub)
    with pytest.raises(Stop):
        entry.main(args)
    assert calls == ["apply", "work"]


MADVISE = "always [madvise] never"


def test_hugepages_tunable_added_once_to_the_users_tunables():
    want = f"{xla_cpu.TUNABLE}=1"
    assert xla_cpu.with_hugepages({}, MADVISE, "glibc 2.36") == want
    other = "glibc.malloc.arena_max=2"
    both = xla_cpu.with_hugepages({"GLIBC_TUNABLES": other}, MADVISE, "glibc 2.41")
    assert both == f"{other}:{want}"
    assert xla_cpu.with_hugepages({"GLIBC_TUNABLES": both}, MADVISE, "glibc 2.41") is None


@pytest.mark.parametrize(
    "env, thp_mode, libc",
    [
        ({"GLIBC_TUNABLES": f"{xla_cpu.TUNABLE}=0"}, MADVISE, "glibc 2.36"),  # the user's own
        ({xla_cpu.OPT_OUT: "0"}, MADVISE, "glibc 2.36"),
        ({}, "[always] madvise never", "glibc 2.36"),  # every allocation gets them already
        ({}, "always madvise [never]", "glibc 2.36"),
        ({}, MADVISE, "glibc 2.31"),  # the tunable is new in 2.35
        ({}, MADVISE, ""),  # not glibc
    ],
)
def test_hugepages_left_alone(env, thp_mode, libc):
    assert xla_cpu.with_hugepages(env, thp_mode, libc) is None


def _run(code: str, extra_env: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", xla_cpu.OPT_OUT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env | extra_env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _system_takes_the_tunable() -> bool:
    try:
        mode = xla_cpu.THP_MODE.read_text()
    except OSError:
        return False
    return xla_cpu.with_hugepages({}, mode, os.confstr("CS_GNU_LIBC_VERSION") or "") is not None


def test_reexec_restarts_once_with_the_tunable():
    code = (
        "import os; from bregflax.training import xla_cpu; print('start', flush=True); "
        "xla_cpu.reexec_with_hugepages(); print(os.environ.get('GLIBC_TUNABLES'))"
    )
    lines = _run(code, {}).split()
    if _system_takes_the_tunable():
        assert lines == ["start", "start", f"{xla_cpu.TUNABLE}=1"]  # restarted once, no loop
    else:
        assert lines == ["start", "None"]
    assert _run(code, {xla_cpu.OPT_OUT: "0"}).split() == ["start", "None"]


@pytest.mark.skipif(
    not _system_takes_the_tunable(), reason="needs glibc >= 2.35 and THP in madvise mode"
)
def test_hugepages_spare_xla_buffers_the_page_faults():
    """What the restart is for: XLA:CPU's fresh buffers fault in 2 MiB pages, not 4 KiB ones.
    A 256 MiB output each call: 65,537 faults without the tunable, 640 with (measured)."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "from benchmarks.xla_cpu_issues import faults_per_call\n"
        "print(faults_per_call(jax.jit(lambda x: x * 2.0), jnp.ones((64, 1024, 1024))))\n"
    )
    plain = float(_run(code, {}))
    huge = float(_run(code, {"GLIBC_TUNABLES": f"{xla_cpu.TUNABLE}=1"}))
    assert plain > 60_000  # every 4 KiB page of the 256 MiB output
    assert huge < plain / 20


@pytest.mark.parametrize(
    "env, installed, want",
    [
        ({}, ["jax", "jaxlib", "flax"], True),
        ({"JAX_PLATFORMS": ""}, ["jax", "jaxlib"], True),  # empty is unset, to jax
        ({"JAX_PLATFORMS": "cpu"}, ["jax", "jax_cuda12_plugin", "libtpu"], True),
        ({"JAX_PLATFORMS": "cuda"}, ["jax"], False),
        ({"JAX_PLATFORMS": "cuda,cpu"}, ["jax"], False),
        ({"JAX_PLATFORMS": "tpu"}, ["jax"], False),
        ({"JAX_PLATFORM_NAME": "gpu"}, ["jax"], False),
        ({}, ["jax", "jax-cuda12-plugin", "jax-cuda12-pjrt"], False),
        ({}, ["jax", "jax_cuda13_plugin"], False),
        ({}, ["jax", "libtpu"], False),
        ({}, ["jax", "libtpu-nightly"], False),
        ({}, ["jax", "jax-rocm7-plugin"], False),
    ],
)
def test_cpu_only_from_the_environment_and_the_installed_plugins(env, installed, want):
    assert xla_cpu.cpu_only(env, installed) is want


def test_no_cpu_flags_for_an_accelerator(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_cpu.OPT_OUT, raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    xla_cpu.apply()
    assert "XLA_FLAGS" not in os.environ


def test_installed_names_are_those_importlib_metadata_knows():
    names = set(xla_cpu._installed())
    assert {"jax", "jaxlib"} <= {n.replace("_", "-").lower() for n in names}


SPY_ON_JAX = (
    "import runpy, sys\n"
    "class Spy:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'jax':\n"
    "            print('import jax', flush=True)\n"
    "print('start', flush=True)\n"
    "sys.meta_path.insert(0, Spy())\n"
    "sys.argv = ['bregflax', '--help']\n"
    "runpy.run_module('bregflax.{module}', run_name='__main__', alter_sys=True)\n"
)


@pytest.mark.parametrize(
    "module, platforms",
    [
        ("main", "cpu"),
        ("main", "cuda"),
        ("main", "tpu"),
        ("evaluate", "cpu"),
        ("reproduce", "cuda"),
    ],
)
def test_training_commands_restart_on_cpu_only_and_before_jax_is_imported(module, platforms):
    """A command as ``bregflax train`` runs it (runpy, as ``python -m``): on the CPU it restarts
    before importing jax, on an accelerator it does not restart. ``--help`` stops before a
    backend starts, so no accelerator is needed."""
    code = SPY_ON_JAX.format(module=module)
    out = _run(code, {"JAX_PLATFORMS": platforms}).splitlines()
    lines = [line for line in out if line in ("start", "import jax")]
    if platforms == "cpu" and _system_takes_the_tunable():
        assert lines == ["start", "start", "import jax"]
    else:
        assert lines == ["start", "import jax"]
