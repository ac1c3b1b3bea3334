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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
TESTED_JAXLIB = ("0.10.",)
OPT_OUT = "BREGFLAX_XLA_DEFAULTS"


def with_defaults(environ: Mapping[str, str], jaxlib_version: str) -> str | None:
    """The ``XLA_FLAGS`` to use, or None to leave the environment as it is."""
    if environ.get(OPT_OUT, "1") == "0" or not jaxlib_version.startswith(TESTED_JAXLIB):
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
