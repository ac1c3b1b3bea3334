"""XLA:CPU settings for training, applied by the entry points before jax starts its backends.

``apply()`` keeps XLA:CPU's YNNPACK fusions for dots, elementwise ops and reductions but not
for convolutions: YNNPACK runs a convolution on one thread, XLA's own kernels on all of
them, and training steps are faster that way (docs/performance.md, Finding 8). Importing a
bregflax module never changes the flags: the training commands (``bregflax.main``,
``bregflax.evaluation.evaluate``, ``bregflax.paper.reproduce``) call ``apply()`` first thing,
and inference
alone (``predict``, ``export``, ``runtime``) does not, since the small shipped model's
batched inference is faster without it. The flag touches only the CPU backend, and only on
the jaxlib versions it was measured on, 0.10 and 0.12 (XLA aborts on flags it does not
know; without it jaxlib 0.12 trained at half the speed); a value you set for the flag
yourself is always kept.

XLA:CPU also allocates each execution's temporaries afresh and frees them after, so the
kernel faults in and zeroes every 4 KiB page of them again on every step. glibc puts its
large allocations on transparent huge pages when the tunable ``glibc.malloc.hugetlb=1`` is
set, which glibc reads only when a process starts; ``reexec_with_hugepages`` therefore
restarts the training commands once with it (docs/performance.md, Finding 10).

Both are for the CPU backend only, and are skipped when jax will run on an accelerator:
when ``JAX_PLATFORMS`` names another platform, or is unset while an accelerator plugin
(``jax-cuda*-plugin``, ``jax-rocm*-plugin``, ``libtpu``) is installed. This is decided
without importing jax (``cpu_only``), so the restart costs only Python's own start-up.

Set ``BREGFLAX_XLA_DEFAULTS=0`` to turn both off.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
TESTED_JAXLIB = ("0.10.", "0.12.")
OPT_OUT = "BREGFLAX_XLA_DEFAULTS"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Distributions that give jax a non-CPU backend (normalized names, by prefix).
ACCELERATOR_PLUGINS = ("jax-cuda", "jax-rocm", "libtpu", "jax-tpu", "jax-metal")


def _opted_out(environ: Mapping[str, str]) -> bool:
    return environ.get(OPT_OUT, "1") == "0"


def cpu_only(environ: Mapping[str, str], installed: Iterable[str]) -> bool:
    """Whether jax's default backend will be the CPU, decided without importing jax.

    ``installed``: the names of the installed distributions. ``JAX_PLATFORMS`` (or the
    older ``JAX_PLATFORM_NAME``) decides when set: only "cpu" is the CPU. Unset, jax takes
    an accelerator whenever a plugin for one is installed, so any such plugin counts as one
    (a CUDA plugin on a machine without a GPU is taken for a GPU: no CPU defaults then).
    """
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    named = {p.strip().lower() for p in platforms.split(",") if p.strip()}
    if named:
        return named == {"cpu"}
    names = (re.sub(r"[-_.]+", "-", name).lower() for name in installed)
    return not any(name.startswith(ACCELERATOR_PLUGINS) for name in names)


def _installed() -> list[str]:
    """The installed distributions' names; from their folder names where possible, which is
    a hundred times faster than reading every METADATA file."""
    dists = metadata.distributions()
    return [getattr(d, "_normalized_name", None) or d.metadata["Name"] or "" for d in dists]


def _on_cpu() -> bool:
    return cpu_only(os.environ, _installed())


def with_defaults(environ: Mapping[str, str], jaxlib_version: str) -> str | None:
    """The ``XLA_FLAGS`` to use, or None to leave the environment as it is."""
    if _opted_out(environ) or not jaxlib_version.startswith(TESTED_JAXLIB):
        return None
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return None
    return f"{flags} {FLAG}={VALUE}".strip()


def apply() -> None:
    """Adds the defaults to ``os.environ["XLA_FLAGS"]`` (see the module doc).

    Effective only before jax's first computation in this process: XLA reads its flags once,
    when a backend starts.
    """
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if not _on_cpu():
        return
    flags = with_defaults(os.environ, version)
    if flags is not None:
        os.environ["XLA_FLAGS"] = flags


def with_hugepages(environ: Mapping[str, str], thp_mode: str, libc: str) -> str | None:
    """The ``GLIBC_TUNABLES`` to restart with, or None to leave the process as it is.

    ``thp_mode`` is the kernel's transparent-huge-page setting (its sysfs text, e.g.
    "always [madvise] never"); ``libc`` is ``os.confstr("CS_GNU_LIBC_VERSION")``. Only
    "madvise" needs the tunable ("always" already gives every allocation huge pages), and
    only glibc 2.35 and later know it.
    """
    if _opted_out(environ) or "[madvise]" not in thp_mode:
        return None
    name, _, version = libc.partition(" ")
    numbers = tuple(int(v) for v in version.split(".")[:2] if v.isdigit())
    if name != "glibc" or numbers < (2, 35):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in tunables:  # set already: by our restart, or by the user
        return None
    return ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))


def reexec_with_hugepages() -> None:
    """Restarts this process with ``with_hugepages``'s tunable, if it returns one.

    Only for a program's entry point, and first thing, before jax and the other heavy
    modules are imported: it re-runs the command line the process started with
    (``sys.orig_argv``), keeping its pid, environment and arguments. Not on accelerators
    (``cpu_only``).
    """
    try:
        thp_mode = THP_MODE.read_text()
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (OSError, ValueError, AttributeError):
        return
    tunables = with_hugepages(os.environ, thp_mode, libc)
    if tunables is None or not _on_cpu():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "GLIBC_TUNABLES": tunables},
    )
