"""Orbax's echoes of a failed restore or save, kept out of sight while a command or a load runs.

Each array read of a restore that fails, or that was still pending when orbax closed its
event loop, is reported again as an unraisable error or an asyncio task error ("Task
exception was never retrieved", with the read's traceback), hundreds of lines for one
damaged file, and a read abandoned unstarted as a coroutine "never awaited" (under load).
The restore's own exception says it once.

``suppressed()`` holds them for a block (a whole command, so that late echoes stay hidden
too, or one library load) and removes every hook it installed when the outermost block
ends (collecting first the reads a failed restore abandoned, so that they do not echo later
when the garbage collector meets them): a program that loads a run inherits nothing.
``restoring(directory)`` marks one restore inside it: messages naming its directory are
held, dropped if it fails (and later ones naming it), shown if it succeeds. Every other
unraisable error, asyncio message and warning shows.

A save that fails in orbax's writer threads (a full disk, a file size limit) is logged by
each thread with its whole traceback (about 270 lines for one save) before the same error
reaches the command, which says it in one line. Those thread reports are held while the
block runs: dropped if the block ends in an error that ``resource_error`` names (the command
says it), shown at the block's end otherwise, so a failure no one else reports still shows.
"""

from __future__ import annotations

import contextlib
import gc
import logging as py_logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator

from bregflax import errors

ECHOES = ("Event loop is closed", "error while reading array")
UNAWAITED_READ = r"coroutine '.*_index_and_device_put' was never awaited"
THREAD_FAILURE = "_SignalingThread.run() raised an exception"  # orbax's writer threads


class Echoes:
    """The filter behind ``suppressed`` and ``restoring`` (one per process)."""

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.trying: str | None = None
        self.held: list = []
        self.thread_failures: list = []
        self.previous_hook = None
        self.depth = 0
        self.saved_filters = None
        self.lock = threading.Lock()  # orbax's reads report from their own threads

    def shows(self, text: str, replay) -> bool:
        """Whether a message shows now; ``replay()`` shows it later if it is held."""
        with self.lock:
            if any(echo in text for echo in ECHOES) or any(d in text for d in self.failed):
                return False
            if self.trying is not None and self.trying in text:
                self.held.append(replay)
                return False
            return True

    def _hook(self, unraisable) -> None:
        text = f"{unraisable.err_msg} {unraisable.exc_value}"
        previous = self.previous_hook or sys.__unraisablehook__
        if self.shows(text, lambda: previous(unraisable)):
            previous(unraisable)

    def _filter(self, record: py_logging.LogRecord) -> bool:
        logger = py_logging.getLogger(record.name)
        return self.shows(record.getMessage(), lambda: logger.handle(record))

    def _thread_filter(self, record: py_logging.LogRecord) -> bool:
        if THREAD_FAILURE not in record.getMessage():
            return True
        logger = py_logging.getLogger(record.name)
        with self.lock:
            self.thread_failures.append(lambda: logger.handle(record))
        return False

    def _install(self) -> None:
        warnings.filterwarnings("ignore", message=UNAWAITED_READ, category=RuntimeWarning)
        if sys.unraisablehook != self._hook:
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._hook
        asyncio_logger = py_logging.getLogger("asyncio")
        if self._filter not in asyncio_logger.filters:
            asyncio_logger.addFilter(self._filter)
        absl_logger = py_logging.getLogger("absl")
        if self._thread_filter not in absl_logger.filters:
            absl_logger.addFilter(self._thread_filter)

    def _uninstall(self) -> None:
        if sys.unraisablehook == self._hook:
            sys.unraisablehook = self.previous_hook or sys.__unraisablehook__
        self.previous_hook = None
        py_logging.getLogger("asyncio").removeFilter(self._filter)
        py_logging.getLogger("absl").removeFilter(self._thread_filter)
        warnings.filters[:] = [
            f for f in warnings.filters if not (f[1] is not None and f[1].pattern == UNAWAITED_READ)
        ]
        getattr(warnings, "_filters_mutated", lambda: None)()  # reset its caches
        with self.lock:
            self.failed.clear()

    @contextlib.contextmanager
    def suppressed(self) -> Iterator[None]:
        """Holds the echoes while the block runs; the outermost block removes the hooks."""
        with self.lock:
            self.depth += 1
            first = self.depth == 1
        if first:
            self._install()
        told = False  # the block ends in an error that the command says in one line
        try:
            yield
        except BaseException as e:
            told = bool(errors.resource_error(e))
            raise
        finally:
            with self.lock:
                self.depth -= 1
                last = self.depth == 0
                failures = self.thread_failures if last else []
                if last:
                    self.thread_failures = []
            if last:
                if self.failed:  # its abandoned reads, in cycles, echo when collected:
                    gc.collect()  # collect them now, while their echoes are held
                self._uninstall()
                for replay in [] if told else failures:
                    replay()

    @contextlib.contextmanager
    def restoring(self, directory: str | os.PathLike) -> Iterator[None]:
        """Holds what names ``directory`` while the block restores it (see the module)."""
        trying = os.path.join(os.path.abspath(directory), "")
        with self.suppressed():
            self._install()  # again: pytest resets warnings filters after each test
            with self.lock:
                self.trying, self.held = trying, []
            try:
                yield
            except BaseException:
                with self.lock:
                    self.failed.add(trying)
                    self.trying, self.held = None, []
                raise
            with self.lock:
                held, self.trying, self.held = self.held, None, []
                self.failed.discard(trying)  # restored: a checkpoint saved there is sound
            for replay in held:
                replay()


_ECHOES = Echoes()
suppressed = _ECHOES.suppressed
restoring = _ECHOES.restoring
