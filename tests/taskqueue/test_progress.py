"""``wait_all(deferreds, progress_bar=...)``: a bar counting the results as
they arrive, failures as ``failed=N``, closed before wait_all returns."""

from __future__ import annotations

import io
import sys

import pytest

from poolx import get_broker
from poolx.exceptions import ExtraNotInstalled
from poolx.task import wait_all

from .helpers import WAIT, thread_worker


def _invert(x):
    return 1 / x


def last_line(out: io.StringIO) -> str:
    text = out.getvalue()
    assert text.endswith("\n"), f"the bar was not closed: {text!r}"
    return text.rstrip("\n").split("\r")[-1]


@pytest.fixture
def broker(url):
    broker = get_broker(url)
    broker.expose(_invert)
    return broker


def test_wait_all_bar_counts_results_and_failures(broker):
    q = broker.queue()
    out = io.StringIO()
    with thread_worker(broker, workers=2):
        results = [q._invert(i % 10) for i in range(30)]  # every tenth divides by zero
        assert wait_all(results, WAIT, progress_bar={"file": out, "desc": "tasks"})
    line = last_line(out)
    assert line.startswith("tasks: 100%") and "30/30" in line and "failed=3" in line
    assert [r.status for r in results].count("failed") == 3


def test_results_already_in_are_counted(broker):
    q = broker.queue()
    with thread_worker(broker):
        first = [q._invert(i + 1) for i in range(3)]
        assert wait_all(first, WAIT)
        second = [q._invert(0), q._invert(5)]
        out = io.StringIO()
        assert wait_all([*first, *second], WAIT, progress_bar={"file": out})
    line = last_line(out)
    assert "5/5" in line and "failed=1" in line


def test_a_timeout_closes_the_bar(broker):
    q = broker.queue()  # nobody consumes it
    results = [q._invert(i) for i in range(4)]
    out = io.StringIO()
    assert not wait_all(results, 0.05, progress_bar={"file": out})
    assert "0/4" in last_line(out)


def test_without_tqdm_the_error_names_the_extra(broker, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ExtraNotInstalled, match=r"pip install 'poolx\[progress\]'"):
        wait_all([broker.queue()._invert(1)], 0, progress_bar=True)
    assert wait_all([], 0, progress_bar=False)


def test_a_bad_option_is_a_type_error(broker):
    with pytest.raises(TypeError, match="progress_bar must be a bool or a dict"):
        wait_all([], 0, progress_bar="yes")


class BrokenFile(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("the reader went away")


def test_a_bar_that_cannot_be_drawn_does_not_fail_the_wait(broker, caplog):
    q = broker.queue()
    with thread_worker(broker):
        results = [q._invert(i + 1) for i in range(3)]
        assert wait_all(results, WAIT, progress_bar={"file": BrokenFile()})
    assert [r.value for r in results] == [1.0, 0.5, 1 / 3]
    assert "the progress bar cannot be drawn (BrokenPipeError" in caplog.text
