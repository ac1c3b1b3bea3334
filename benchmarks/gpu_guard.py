"""Time guards and fault injection for benchmarks/gpu_suite.py (the one-shot GPU run).

``time_guard(seconds)`` raises ``TimeUp`` in the main thread once ``seconds`` have passed,
and again every ``REFIRE_S`` while the guarded code runs on (something caught it). Guards
nest: a stage's guard holds a training run's guard inside it, and whichever deadline comes
first fires, naming its own guard (``TimeUp.guard``), so a training run catches only its own
and the stage's passes through. The alarm (SIGALRM) fires between two Python operations:
a call blocked inside XLA or CUDA is stopped only when it returns, which is why
scripts/gpu_run.sh also runs each scale under ``timeout``.

``fault(point)`` lets tests break the run on purpose: ``BREGFLAX_GPU_FAULTS`` holds
``point=kind`` pairs, comma-separated; ``kind`` is ``error`` (raise ``InjectedFault``),
``hang`` (sleep until a time guard stops it) or ``stall`` (sleep with the alarm ignored, as
in a call stuck in C: only the shell's ``timeout`` ends it). Points: each stage's name,
``torch`` (every PyTorch row) or ``torch:MODEL DTYPE batch N`` (one row), ``jax:...`` alike,
``evaluate`` and ``package``; ``SCALE:point`` (``test:check``) breaks only that scale.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time

FAULTS_ENV = "BREGFLAX_GPU_FAULTS"
scale = ""  # the scale running (gpu_suite.main sets it), for SCALE:point faults


class TimeUp(BaseException):
    """A time guard's deadline passed; ``guard`` names the guard (its id). A BaseException,
    as KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, message: str, guard: int):
        super().__init__(message)
        self.guard = guard


class InjectedFault(RuntimeError):
    """Raised by ``fault`` where ``BREGFLAX_GPU_FAULTS`` asks for an error."""


_ids = itertools.count(1)
_active: dict[int, tuple[float, str]] = {}  # guard id -> (monotonic deadline, what it guards)
_previous_handler = None


REFIRE_S = 10.0  # a guard still active this long after its TimeUp raises it again
# Code where an exception is printed and dropped ("Exception ignored in"): a TimeUp raised
# there is lost. jax's garbage-collection callback is one; the rehearsal's check overran its
# guard by 24 s so. The alarm waits for such code to return instead.
_SWALLOWERS = frozenset({"_xla_gc_callback", "__del__"})


def _arm(delay: float | None = None) -> None:
    if _active:
        soonest = min(deadline for deadline, _ in _active.values())
        delay = max(soonest - time.monotonic(), 1e-3) if delay is None else delay
        signal.setitimer(signal.ITIMER_REAL, delay, REFIRE_S)
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _expire(signum, frame) -> None:
    now = time.monotonic()
    due = [(deadline, gid) for gid, (deadline, _) in _active.items() if deadline <= now + 1e-3]
    if not due:  # woken early (a guard left meanwhile): wait for the next deadline
        _arm()
        return
    if frame is not None and frame.f_code.co_name in _SWALLOWERS:
        _arm(0.05)  # raise once that code has returned
        return
    _, gid = min(due)
    raise TimeUp(_active[gid][1], gid)


@contextlib.contextmanager
def time_guard(seconds: float, what: str = "the time guard"):
    """Raises TimeUp("stopped by {what} after N s") once ``seconds`` (at least 1) have passed;
    yields the guard's id."""
    global _previous_handler
    seconds = max(seconds, 1.0)
    gid = next(_ids)
    if not _active:
        _previous_handler = signal.signal(signal.SIGALRM, _expire)
    _active[gid] = (time.monotonic() + seconds, f"stopped by {what} after {seconds:.0f} s")
    _arm()
    try:
        yield gid
    finally:
        del _active[gid]
        _arm()
        if not _active:
            signal.signal(signal.SIGALRM, _previous_handler or signal.SIG_DFL)


def faults() -> dict[str, str]:
    """``BREGFLAX_GPU_FAULTS`` as {point: kind}."""
    pairs = (p.partition("=") for p in os.environ.get(FAULTS_ENV, "").split(",") if p.strip())
    return {point.strip(): kind.strip() for point, _, kind in pairs}


def fault(point: str) -> None:
    """Breaks the run here if ``BREGFLAX_GPU_FAULTS`` names ``point`` (a no-op otherwise)."""
    wanted = faults()
    kind = wanted.get(f"{scale}:{point}", wanted.get(point))
    if kind is None:
        return
    if kind == "error":
        raise InjectedFault(f"injected fault at {point}")
    if kind == "stall":  # the alarm goes unheard, as in a call that never returns to Python
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    if kind in ("hang", "stall"):
        while True:
            time.sleep(0.05)
    raise ValueError(f"{FAULTS_ENV}: unknown kind {kind!r} at {point} (error, hang or stall)")
