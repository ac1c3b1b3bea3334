"""XLA:CPU settings that bregflax's trainer applies by default, before jax starts its backends.

On XLA:CPU (jaxlib 0.10) convolutions lowered to YNNPACK fusions run on one thread: a 3x3
conv of f32[64,48,48,32] takes the same 12.5 ms on one core as on two. Keeping YNNPACK for
dots, elementwise ops and reductions only sends convolutions to XLA's multi-threaded
kernels, and the train step runs 1.18x (BReGNetSmall) to 1.24x (BReGNetCPU) faster
(docs/performance.md, Finding 8). ``bregflax.train`` applies it on import, so training,
evaluation and ``reproduce`` get it; inference alone (``predict``, ``export``, ``runtime``)
does not, since the small shipped model's batched inference is faster without it. The flag
touches only the CPU backend.

Set ``BREGFLAX_XLA_DEFAULTS=0`` to leave ``XLA_FLAGS`` alone; a value you set for the flag
yourself is always kept. It takes effect only if ``bregflax.train`` is imported before jax
runs its first computation, and only on jaxlib versions it was measured on (XLA aborts on
flags it does not know).

XLA:CPU also allocates each execution's temporaries afresh (1.1 GB for a BReGNetCPU train
step at batch 64) and frees them after, so the kernel faults in and zeroes every 4 KiB page
again each step: 278k page faults and 0.45 s of system time per 0.95 s step. glibc puts its
large allocations on transparent huge pages when the tunable ``glibc.malloc.hugetlb=1`` is
set, which glibc reads only when a process starts; ``reexec_with_hugepages`` therefore
restarts the training commands once with it (1,100 faults a step, 1.2-1.4x faster). The
same opt-out turns it off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
TESTED_JAXLIB = ("0.10.",)
OPT_OUT = "BREGFLAX_XLA_DEFAULTS"
TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _opted_out(environ: Mapping[str, str]) -> bool:
    return environ.get(OPT_OUT, "1") == "0"


def with_defaults(environ: Mapping[str, str], jaxlib_version: str) -> str | None:
    """The ``XLA_FLAGS`` to use, or None to leave the environment as it is."""
    if _opted_out(environ) or not jaxlib_version.startswith(TESTED_JAXLIB):
        return None
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return None
    return f"{flags} {FLAG}={VALUE}".strip()


def apply() -> None:
    """Adds the defaults to ``os.environ["XLA_FLAGS"]`` (see the module doc)."""
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
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

    Only for a program's entry point: it re-runs the command line the process started
    with (``sys.orig_argv``), keeping its pid, environment and arguments.
    """
    try:
        thp_mode = THP_MODE.read_text()
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (OSError, ValueError, AttributeError):
        return
    tunables = with_hugepages(os.environ, thp_mode, libc)
    if tunables is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {**os.environ, "GLIBC_TUNABLES": tunables},
    )
