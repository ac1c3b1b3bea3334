"""orbax's echoes of a failed restore: held, dropped or shown, and nothing left installed."""

import gc
import logging
import sys
import threading
import warnings

import pytest

from bregflax import echoes as echoes_lib


def test_an_abandoned_read_is_not_echoed_but_other_unawaited_coroutines_are():
    """Under load a failed restore leaves orbax's ``..._index_and_device_put`` reads
    unawaited; their RuntimeWarning would break "one line per skipped checkpoint"."""

    async def _index_and_device_put():
        pass

    async def something_else():
        pass

    def warn_both():
        for make in (_index_and_device_put, something_else):
            coroutine = make()
            del coroutine
            gc.collect()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # every warning shows, but for the quieted one
        with echoes_lib.Echoes().suppressed():
            warn_both()
        messages = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "something_else' was never awaited" in messages[0]
        warn_both()  # the block has ended: its filter is gone
        messages = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 3, messages


def test_what_names_a_failed_restore_is_dropped_what_names_a_good_one_shows_after(tmp_path):
    """Echoes without the usual words ("Task exception was never retrieved" for a read of
    the damaged file, seen in CI) are known by the directory they name."""
    echoes, shown = echoes_lib.Echoes(), []

    def message(step, what="Truncated Zstd-compressed stream"):
        text = f"future: <Task finished exception=ValueError('{tmp_path}/{step}/default/: {what}')>"
        if echoes.shows(text, lambda: shown.append(text)):
            shown.append(text)

    with echoes.suppressed():  # a command
        with pytest.raises(OSError):
            with echoes.restoring(tmp_path / "12"):
                message(12)  # during the failing restore: held, then dropped
                raise OSError("damaged")
        message(12)  # after it: dropped
        message(120)  # another step whose name starts alike: shown at once
        assert [m.split("/")[-3] for m in shown] == ["120"]
        with echoes.restoring(tmp_path / "9"):
            message(9, "a real message during a good restore")
            assert len(shown) == 1  # held while the restore runs
        assert len(shown) == 2 and "a real message" in shown[1]  # and shown once it succeeded
        message(6, "Encountered error while reading array index")  # the usual words: dropped
        assert len(shown) == 2
        with echoes.restoring(tmp_path / "12"):  # step 12 saved again, and sound
            pass
        message(12, "a real message about the new step 12")
        assert len(shown) == 3 and "new step 12" in shown[2]


def test_an_asyncio_echo_of_a_failed_restore_is_not_logged(tmp_path, caplog):
    echoes = echoes_lib.Echoes()
    asyncio_logger = logging.getLogger("asyncio")
    with echoes.suppressed():
        with pytest.raises(OSError):
            with echoes.restoring(tmp_path / "12"):
                raise OSError("damaged")
        asyncio_logger.error(
            "Task exception was never retrieved\nfuture: %s", tmp_path / "12" / "x"
        )
        asyncio_logger.error("Task exception was never retrieved\nfuture: %s", tmp_path / "3" / "x")
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(logged) == 1 and str(tmp_path / "3") in logged[0], logged


def test_reads_a_failed_restore_abandoned_in_cycles_do_not_echo_after_the_block(
    tmp_path, monkeypatch
):
    """Orbax's reads of a damaged checkpoint are left suspended, held in reference cycles;
    closed by the garbage collector after the block, each raised "Encountered error while
    reading array index" as an unraisable error (39 tracebacks seen in one test run)."""

    class Suspend:
        def __await__(self):
            yield

    async def _read_array_index_and_device_put():
        try:
            await Suspend()
        except GeneratorExit:
            raise Exception("Encountered error while reading array index") from None

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    gc.collect()
    echoes = echoes_lib.Echoes()
    with echoes.suppressed():
        with pytest.raises(OSError), echoes.restoring(tmp_path / "6"):
            read = _read_array_index_and_device_put()
            read.send(None)  # suspended, as orbax leaves it
            cycle = [read]
            cycle.append(cycle)
            del read, cycle
            raise OSError("checkpoint 6 is damaged")
    gc.collect()
    assert seen == []


def test_the_unraisable_hook_passes_on_the_rest_and_is_put_back(monkeypatch):
    class RaisesWhenCollected:
        def __init__(self, text):
            self.text = text

        def __del__(self):
            raise ValueError(self.text)

    seen = []
    previous = lambda u: seen.append(str(u.exc_value))  # noqa: E731
    monkeypatch.setattr(sys, "unraisablehook", previous)
    with echoes_lib.Echoes().suppressed():
        for text in ("Encountered error while reading array index: (0,)", "something else"):
            RaisesWhenCollected(text)
            gc.collect()
    assert seen == ["something else"]
    assert sys.unraisablehook is previous


def test_the_outermost_block_removes_everything_it_installed():
    echoes = echoes_lib.Echoes()
    asyncio_logger = logging.getLogger("asyncio")
    absl_logger = logging.getLogger("absl")
    hooks = lambda: (  # noqa: E731
        sys.unraisablehook,
        list(asyncio_logger.filters),
        list(absl_logger.filters),
        list(warnings.filters),
    )
    before = hooks()
    with echoes.suppressed():
        with echoes.suppressed():  # nested: the inner end removes nothing
            pass
        assert sys.unraisablehook == echoes._hook
        assert echoes._filter in asyncio_logger.filters
        assert echoes._thread_filter in absl_logger.filters
    assert hooks() == before


def _writer_thread_fails(text: str) -> None:
    """What orbax's writer thread logs when a save's write fails (its words, from a thread)."""

    def run():
        try:
            raise ValueError(text)
        except ValueError as e:
            logging.getLogger("absl").exception(
                "[process=0][thread=array_type_handler] %s: %s", echoes_lib.THREAD_FAILURE, e
            )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def test_a_save_that_failed_for_want_of_space_is_said_once_not_per_thread(caplog):
    echoes = echoes_lib.Echoes()
    full = "Failed to write 30742 bytes to file 12: File too large [os_error_code='27']"
    with pytest.raises(ValueError):
        with echoes.suppressed():
            _writer_thread_fails(full)
            _writer_thread_fails(full)
            raise ValueError(f"OUT_OF_RANGE: {full}")  # what the command says in one line
    assert not [r for r in caplog.records if r.name == "absl"]


def test_a_writer_thread_failure_no_one_else_says_shows_at_the_end(caplog):
    echoes = echoes_lib.Echoes()
    with pytest.raises(RuntimeError):
        with echoes.suppressed():
            _writer_thread_fails("permission denied")
            assert not [r for r in caplog.records if r.name == "absl"]  # held meanwhile
            raise RuntimeError("a bug")
    with echoes.suppressed():
        _writer_thread_fails("a late failure")
    shown = [r.getMessage() for r in caplog.records if r.name == "absl"]
    assert len(shown) == 2 and "permission denied" in shown[0] and "late" in shown[1]
    assert all(r.exc_info for r in caplog.records if r.name == "absl")  # tracebacks kept
