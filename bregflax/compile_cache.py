"""JAX's persistent compilation cache: a compiled XLA program kept on disk for the next
process, so a command run again starts without compiling (about 1.7 s of the ~3.5 s a
`bregflax predict` spends starting, measured in docs/performance.md).

``bregflax predict`` keeps its programs in :func:`default_dir` (``$BREGFLAX_COMPILE_CACHE``,
else ``$XDG_CACHE_HOME/bregflax/jax``, else ``~/.cache/bregflax/jax``; set
``BREGFLAX_COMPILE_CACHE=`` (empty) to keep none); ``bregflax reproduce`` in its workdir
(``--compile_cache``). JAX keys each entry by the program, the compiler's flags and the
versions of jax and jaxlib, so a stale entry is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "BREGFLAX_COMPILE_CACHE"


def default_dir(environ=os.environ) -> str:
    """Where ``bregflax predict`` keeps compiled programs; "" for nowhere."""
    if ENV in environ:
        return environ[ENV]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bregflax", "jax")


def enable(path: str | os.PathLike) -> bool:
    """Keeps every compiled XLA program in ``path`` (made if need be); False, and nothing
    kept, when ``path`` is "" or a local folder that cannot be made or written."""
    if not str(path):
        return False
    if "://" not in str(path):
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        if not os.access(path, os.W_OK | os.X_OK):
            return False
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True
