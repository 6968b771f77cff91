"""The redis:// group-commit writer (poolx.queue._redis_writer), with a fake commit."""

from __future__ import annotations

import threading

from poolx.queue._redis_writer import Writer

WAIT = 10.0


class _Commits:
    """A commit function that records each batch; the first one can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.changed = threading.Condition()
        self.hold_first = threading.Event()
        self.hold_first.set()

    def __call__(self, items: list[int]) -> None:
        if not self.batches:
            assert self.hold_first.wait(WAIT)
        with self.changed:
            self.batches.append(list(items))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        """Wait until ``count`` items are committed; False at ``timeout``."""
        with self.changed:
            return self.changed.wait_for(lambda: sum(map(len, self.batches)) >= count, timeout)


def test_writes_of_a_spell_go_in_one_commit_after_the_pace():
    """After a commit the writer waits PACE seconds, and writes added
    meanwhile do not wake it: they all go in the next commit.  The first
    write after an idle spell is committed at once."""
    commits = _Commits()
    writer = Writer(commits, "test-writer")
    writer.PACE = 3600.0  # the test decides when the pace ends: sync() cuts it short
    writer.add(1)
    assert commits.wait_for(1)  # at once: no pace before the first commit
    writer.add(2)
    assert not commits.wait_for(2, timeout=0.3)  # pacing: 2 waits for more
    writer.add(3)
    writer.add(4)
    assert commits.batches == [[1]]
    writer.sync()  # a reader waits: committed at once
    assert commits.batches == [[1], [2, 3, 4]]
    writer.PACE = writer.LINGER = 0.0  # let its (non-daemon) thread end
    writer.add(5)
    writer.sync()
    assert commits.batches == [[1], [2, 3, 4], [5]]


def test_writes_added_during_a_commit_go_in_the_next_one():
    commits = _Commits()
    commits.hold_first.clear()
    writer = Writer(commits, "test-writer")
    writer.PACE = 0.0
    writer.add(1)
    writer.add(2)  # (may join the first commit, or wait for the next)
    for item in (3, 4, 5):
        writer.add(item)
    commits.hold_first.set()
    writer.sync()
    assert sorted(sum(commits.batches, [])) == [1, 2, 3, 4, 5]
    assert len(commits.batches) <= 2


def test_an_idle_writer_commits_the_next_write_at_once():
    commits = _Commits()
    writer = Writer(commits, "test-writer")
    writer.PACE = 0.0
    writer.LINGER = 0.01
    writer.add(1)
    assert commits.wait_for(1)
    writer.add(2)  # the thread is idle (or gone): this wakes (or starts) it
    assert commits.wait_for(2)
    assert commits.batches == [[1], [2]]
    writer.sync()
