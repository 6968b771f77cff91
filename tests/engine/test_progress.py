"""``progress_bar=`` on Pool.map & co. and ProcessPoolExecutor.map: the bar
counts items (not chunks), knows or does not know its total, shows failures,
and is closed on success, error, timeout and terminate.

tqdm writes to the file given in the options (``file=io.StringIO()``); a
closed bar's last line ends with a newline (tqdm's ``leave=True``), which is
how these tests see that it was closed.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import poolx
from poolx.engine.progress import Tracker
from poolx.exceptions import ExtraNotInstalled, PoolTerminated, TimeLimitExceeded, WorkerLostError
from tests.conftest import wait_until
from tests.engine import helpers

ROOT = Path(__file__).resolve().parents[2]


def closed(out: io.StringIO) -> bool:
    return out.getvalue().endswith("\n")


def last_line(out: io.StringIO) -> str:
    """What the closed bar shows last."""
    text = out.getvalue()
    assert text.endswith("\n"), f"the bar was not closed: {text!r}"
    return text.rstrip("\n").split("\r")[-1]


# -- counting items ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["map", "starmap"])
def test_map_counts_items_not_chunks(pool, method):
    out = io.StringIO()
    items = [(i,) for i in range(50)] if method == "starmap" else list(range(50))
    results = getattr(pool, method)(helpers.square, items, chunksize=7,
                                    progress_bar={"file": out, "desc": "squares"})
    assert results == [i * i for i in range(50)]
    line = last_line(out)  # closed before map() returned
    assert line.startswith("squares: 100%") and "50/50" in line and "failed" not in line


@pytest.mark.parametrize("method", ["map_async", "starmap_async"])
def test_async_bar_is_closed_when_get_returns(pool, method):
    out = io.StringIO()
    items = [(i,) for i in range(30)] if method == "starmap_async" else list(range(30))
    result = getattr(pool, method)(helpers.square, items, chunksize=4, progress_bar={"file": out})
    assert result.get(30) == [i * i for i in range(30)]
    assert "30/30" in last_line(out)


def test_async_bar_closes_by_itself_when_nobody_waits(pool):
    out = io.StringIO()
    done = threading.Event()
    pool.map_async(helpers.square, range(20), chunksize=3, callback=lambda _: done.set(),
                   progress_bar={"file": out})
    assert done.wait(30)
    wait_until(lambda: closed(out), 10)
    assert "20/20" in last_line(out)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_with_a_known_total(pool, method):
    out = io.StringIO()
    results = list(getattr(pool, method)(helpers.square, range(40), chunksize=6, progress_bar={"file": out}))
    assert sorted(results) == [i * i for i in range(40)]
    assert "40/40" in last_line(out)  # closed before iteration ended


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_of_a_generator_counts_up_without_a_total(pool, method):
    out = io.StringIO()
    results = list(getattr(pool, method)(helpers.square, (i for i in range(23)), chunksize=5,
                                         progress_bar={"file": out}))
    assert len(results) == 23
    line = last_line(out)
    assert line.startswith("23item [") and "/" not in line.split("[")[0]


def test_the_total_option_wins(pool):
    out = io.StringIO()
    list(pool.imap(helpers.square, (i for i in range(12)), chunksize=5,
                   progress_bar={"file": out, "total": 12}))
    assert "12/12" in last_line(out)


def test_empty_map_shows_an_empty_closed_bar(pool):
    out = io.StringIO()
    assert pool.map(helpers.square, [], progress_bar={"file": out}) == []
    assert last_line(out).startswith("0item [")  # tqdm shows a total of 0 as none


# -- failures, timeouts, terminate --------------------------------------------------------


def test_map_error_closes_the_bar_and_shows_the_failed_items(pool):
    out = io.StringIO()
    with pytest.raises(ValueError, match="13"):
        pool.map(helpers.square_but_13, range(40), chunksize=7, progress_bar={"file": out})
    # the chunk holding 13 (items 7..13) failed: 7 items
    assert "failed=7" in last_line(out)


def test_imap_shows_failures_and_goes_on(pool):
    out = io.StringIO()
    it = pool.imap(helpers.square_but_13, range(20), chunksize=1, progress_bar={"file": out})
    outcomes = []
    for _ in range(20):
        try:
            outcomes.append(next(it))
        except ValueError:
            outcomes.append("failed")
    with pytest.raises(StopIteration):
        next(it)
    assert outcomes.count("failed") == 1
    line = last_line(out)
    assert "20/20" in line and "failed=1" in line


def test_imap_of_a_failing_input_counts_one_failed_item(pool):
    def items():
        yield from range(3)
        raise OSError("the input broke")

    out = io.StringIO()
    it = pool.imap(helpers.square, items(), chunksize=3, progress_bar={"file": out})
    assert [next(it), next(it), next(it)] == [0, 1, 4]
    with pytest.raises(OSError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    line = last_line(out)
    assert line.startswith("4item [") and "failed=1" in line


def test_hard_timeout_fails_the_map_and_closes_the_bar(ctx):
    out = io.StringIO()
    with poolx.Pool(2, context=ctx, timeout=0.5) as pool:
        with pytest.raises(TimeLimitExceeded):
            pool.map(helpers.sleep, [0, 0, 30, 0], chunksize=2, progress_bar={"file": out})
    assert "failed=2" in last_line(out)


def test_terminate_closes_the_bar(ctx, tmp_path):
    out = io.StringIO()
    pool = poolx.Pool(2, context=ctx)
    gate = str(tmp_path / "never")
    result = pool.map_async(helpers.wait_for_file, [gate] * 6, chunksize=2, progress_bar={"file": out})
    pool.terminate()
    wait_until(lambda: closed(out), 10)  # by the tracker's thread, nobody called get()
    with pytest.raises(PoolTerminated):
        result.get(10)
    assert "/6" in last_line(out)
    pool.join()


def test_terminate_closes_an_imap_bar(ctx, tmp_path):
    out = io.StringIO()
    pool = poolx.Pool(1, context=ctx)
    gate = str(tmp_path / "never")
    it = pool.imap(helpers.wait_for_file, (gate for _ in range(4)), progress_bar={"file": out})
    pool.terminate()
    wait_until(lambda: closed(out), 10)
    with pytest.raises(PoolTerminated):
        next(it)
    pool.join()


def test_get_timeout_leaves_the_bar_running(pool, tmp_path):
    """A caller's get(timeout) gives up waiting, not the work: the bar goes on."""
    gate = tmp_path / "gate"
    out = io.StringIO()
    result = pool.map_async(helpers.wait_for_file, [str(gate)] * 2, progress_bar={"file": out})
    with pytest.raises(poolx.TimeoutError):
        result.get(0.05)
    assert not closed(out)
    gate.touch()
    result.get(30)
    assert "2/2" in last_line(out)


# -- the executor ------------------------------------------------------------------------


@pytest.fixture
def executor(ctx):
    with poolx.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        yield executor


def test_executor_map_counts_items(executor):
    out = io.StringIO()
    results = executor.map(helpers.add, range(30), range(30), chunksize=4, progress_bar={"file": out})
    assert list(results) == [2 * i for i in range(30)]
    assert "30/30" in last_line(out)


def test_executor_map_error_closes_the_bar(executor):
    out = io.StringIO()
    with pytest.raises(ValueError):
        list(executor.map(helpers.square_but_13, range(40), chunksize=5, progress_bar={"file": out}))
    assert "failed=5" in last_line(out)


def test_executor_map_timeout_closes_the_bar(executor, tmp_path):
    out = io.StringIO()
    gate = tmp_path / "gate"
    results = executor.map(helpers.wait_for_file, [str(gate)] * 3, timeout=0.2, progress_bar={"file": out})
    with pytest.raises(TimeoutError):
        list(results)
    assert "0/3" in last_line(out)
    gate.touch()  # let the running calls end: shutdown waits for them


# -- arguments and the missing extra ------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda pool, bar: pool.map(abs, [1], progress_bar=bar),
    lambda pool, bar: pool.map_async(abs, [1], progress_bar=bar),
    lambda pool, bar: pool.imap(abs, [1], progress_bar=bar),
    lambda pool, bar: pool.imap_unordered(abs, [1], progress_bar=bar),
    lambda pool, bar: pool.starmap(abs, [(1,)], progress_bar=bar),
    lambda pool, bar: pool.starmap_async(abs, [(1,)], progress_bar=bar),
])
def test_without_tqdm_a_bar_is_an_error_naming_the_extra(fork_ctx, monkeypatch, call):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm...` raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with poolx.Pool(1, context=fork_ctx) as pool:
        with pytest.raises(ExtraNotInstalled, match=r"pip install 'poolx\[progress\]'") as info:
            call(pool, True)
        assert isinstance(info.value, ImportError) and info.value.extra == "progress"
        assert info.value.name == "tqdm"
        assert pool.stats()["submitted"] == 0  # raised before anything was submitted
        assert call(pool, False) is not None  # no bar asked for: tqdm is not needed


def test_executor_without_tqdm(fork_ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as executor:
        with pytest.raises(ImportError, match="poolx\\[progress\\]"):
            executor.map(abs, [1], progress_bar={"desc": "x"})


@pytest.mark.parametrize("bad", [1, "yes", ["desc"], {1: "x"}])
def test_a_bad_option_is_a_type_error(fork_ctx, bad):
    with poolx.Pool(1, context=fork_ctx) as pool:
        with pytest.raises(TypeError, match="progress_bar must be a bool or a dict of tqdm options"):
            pool.map(abs, [1], progress_bar=bad)


def test_an_unknown_tqdm_option_is_tqdms_error(fork_ctx):
    with poolx.Pool(1, context=fork_ctx) as pool:
        with pytest.raises(KeyError, match="no_such_option"):
            pool.imap(abs, [1], progress_bar={"no_such_option": 1})


def test_no_bar_never_imports_tqdm():
    code = ("import sys, poolx\n"
            "with poolx.Pool(1) as pool:\n"
            "    assert pool.map(abs, [-1, -2], chunksize=1) == [1, 2]\n"
            "    assert list(pool.imap(abs, [-3])) == [3]\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tqdm'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[]\n"


# -- the tracker ---------------------------------------------------------------------


class RecordingBar:
    def __init__(self) -> None:
        self.shown: list[tuple[int, int]] = []
        self.closed = threading.Event()

    def show(self, items: int, failed: int) -> None:
        self.shown.append((items, failed))

    def close(self) -> None:
        self.closed.set()


def test_tracker_shows_counts_from_its_own_thread_and_closes_once():
    bar = RecordingBar()
    tracker = Tracker(bar, 0.01)
    tracker.count(5)
    tracker.count(3, 3)
    wait_until(lambda: (8, 3) in bar.shown, 10)
    tracker.finish()
    assert bar.closed.wait(10)
    tracker.close()  # again: nothing more
    assert tracker.closed and bar.shown[-1] == (8, 3)


def test_a_lost_worker_fails_the_map_and_closes_the_bar(ctx):
    out = io.StringIO()
    with poolx.Pool(2, context=ctx) as pool:
        with pytest.raises(WorkerLostError):
            pool.map(helpers.kill_self, [signal.SIGKILL], progress_bar={"file": out})
    assert "failed=1" in last_line(out)


def test_executor_bar_closes_when_every_call_is_done_without_iterating(executor):
    out = io.StringIO()
    results = executor.map(helpers.square, range(10), chunksize=3, progress_bar={"file": out})
    wait_until(lambda: closed(out), 20)
    assert "10/10" in last_line(out)
    assert list(results) == [i * i for i in range(10)]


class BrokenFile(io.StringIO):
    """A file that breaks after the bar's first line (the terminal went away)."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise OSError("the terminal went away")
        return super().write(text)


def test_a_bar_that_cannot_be_drawn_does_not_fail_the_call(pool, caplog):
    results = pool.map(helpers.square, range(20), chunksize=2, progress_bar={"file": BrokenFile()})
    assert results == [i * i for i in range(20)]
    assert "the progress bar cannot be drawn (OSError: the terminal went away)" in caplog.text
    # tqdm keeps its process-wide lock when a write raises: poolx's guard
    # must have spared it, or this next bar would hang
    out = io.StringIO()
    assert pool.map(helpers.square, range(4), progress_bar={"file": out}) == [0, 1, 4, 9]
    assert "4/4" in last_line(out)


def test_the_example_shows_its_bars_on_stderr():
    done = subprocess.run([sys.executable, "examples/progress.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sum of squares: 2646700\ncharacters: 7890\nbad records: 4\n"
    assert "| 200/200 [" in done.stderr  # items, not the 20 chunks
    assert "lines: 1000line [" in done.stderr  # a generator: no total; the unit option won
    assert "checks: 100%" in done.stderr and "100/100" in done.stderr and "failed=4]" in done.stderr


def test_tqdms_disable_none_draws_nothing_off_a_terminal(pool):
    out = io.StringIO()  # not a terminal
    assert pool.map(helpers.square, range(5), progress_bar={"file": out, "disable": None}) == [0, 1, 4, 9, 16]
    assert out.getvalue() == ""


@pytest.mark.parametrize("interval, error", [("1", TypeError), (-1, ValueError), (True, TypeError)])
def test_a_bad_mininterval_is_checked_as_other_seconds(fork_ctx, interval, error):
    with poolx.Pool(1, context=fork_ctx) as pool:
        with pytest.raises(error, match="mininterval must be a number of seconds"):
            pool.map(abs, [1], progress_bar={"mininterval": interval})


def test_tqdm_write_clears_the_bar_before_its_line(fork_ctx):
    """tqdm.write() (and logging_redirect_tqdm) clear the bars drawn on the
    file they write to: poolx's bar compares as that file (the message
    landed at the end of the bar's line)."""
    from tqdm import tqdm

    buf = io.StringIO()
    with poolx.Pool(1, context=fork_ctx) as pool:
        it = pool.imap(helpers.square, range(3), progress_bar={"file": buf, "mininterval": 0})
        assert next(it) == 0
        tqdm.write("hello", file=buf)
        assert list(it) == [1, 4]
    text = buf.getvalue()
    assert "hello\n" in text and "]hello" not in text, text


def test_ctrl_c_in_map_closes_its_bar(fork_ctx):
    """KeyboardInterrupt while map() waits: the bar closes (it went on
    drawing over the traceback until the map finished)."""
    buf = io.StringIO()
    with poolx.Pool(1, context=fork_ctx) as pool:
        result = pool.map_async(helpers.sleep, [30], progress_bar={"file": buf, "mininterval": 0.01})
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if ignored
        timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                result.get(60)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        drawn = buf.getvalue()
        assert result._tracker is None or result._tracker.closed
        pool.terminate()
    assert buf.getvalue() == drawn  # nothing more was drawn
