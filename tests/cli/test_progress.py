"""``poolx enqueue --wait``: a spinner on a terminal, nothing otherwise.

The terminal is a real pseudo-terminal (``pty.openpty()``): the command's
stdout and stderr are its slave side, and the test reads what a user would
see from the master side.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from poolx.cli import main
from poolx.core import get_broker
from tests.worker import tasks

WAIT = "20"


@pytest.fixture
def pool(url, start_pool):
    return start_pool(get_broker(url), tasks.init, name="cli-progress-pool")


@contextmanager
def terminal() -> Iterator[Callable[[], str]]:
    """Point sys.stdout and sys.stderr at a pty (inside the test: pytest
    swaps them at each phase); yield a function that returns what the
    terminal received."""
    master, slave = pty.openpty()
    # 24 rows of 80 columns, as a real terminal has (a new pty has 0 x 0,
    # and tqdm draws nothing in 0 columns)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    tty = os.fdopen(slave, "w", buffering=1)
    os.set_blocking(master, False)
    received = bytearray()

    def read() -> str:
        tty.flush()
        while True:
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                break
            received.extend(data)
        return received.decode()

    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = tty
    try:
        yield read
    finally:
        sys.stdout, sys.stderr = saved
        tty.close()
        os.close(master)


def test_on_a_terminal_a_spinner_shows_while_waiting(url, pool):
    with terminal() as read:
        code = main(["enqueue", url, "wt.add", "[[1, 2, 3]]", "--wait", WAIT])
        shown = read()
    assert code == 0, shown
    task_id, rest = shown.split("\r\n", 1)
    assert len(task_id) == 32
    assert f"\rwaiting for wt.add [{task_id}] 00:00" in rest
    # the spinner is erased (blanks over it: leave=False) before the result
    assert rest.endswith("\r\n")
    head, result = rest[:-2].rsplit("\r", 1)
    spinner = head.rsplit("\r", 1)[1]
    assert spinner.strip() == "" and len(spinner) >= len(f"waiting for wt.add [{task_id}] 00:00")
    assert result == "6"


def test_not_on_a_terminal_nothing_but_the_id_and_the_result(capsys, url, pool):
    code = main(["enqueue", url, "wt.add", "[[1, 2, 3]]", "--wait", WAIT])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    task_id, value = out.splitlines()
    assert len(task_id) == 32 and value == "6"


def test_on_a_terminal_without_tqdm_it_waits_silently(url, pool, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with terminal() as read:
        code = main(["enqueue", url, "wt.add", "[[4]]", "--wait", WAIT])
        shown = read()
    assert code == 0, shown
    assert "waiting for" not in shown and shown.split()[1:] == ["4"]


def test_on_a_terminal_the_spinner_ends_when_the_wait_times_out(url):
    get_broker(url).taskqueue.register_pool("test-idle", '{"queue": "idle"}', 60)
    with terminal() as read:
        code = main(["enqueue", url, "wt.num", "[1]", "--queue", "idle", "--wait", "0.6"])
        shown = read()
    assert code == 1
    assert "waiting for wt.num [" in shown and "no result within 0.6 s" in shown
