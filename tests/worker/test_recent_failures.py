"""The recent failures a worker pool publishes with its status: the bounded
list (poolx.consumer.failures), the merge across pools (poolx.status), and a
consumer on memory:// listing what failed with its worker."""

from __future__ import annotations

import json

import pytest

from poolx import Retry, Task, TaskFailure, get_queue
from poolx.consumer.failures import KEPT, TEXT_CHARS, RecentFailures, clip
from poolx.core import get_broker
from poolx.status import StatusReader, merge_failures
from tests.conftest import wait_until
from tests.worker import tasks

WAIT = 20


def failure(i: int, error: str = "ValueError: bad") -> TaskFailure:
    return TaskFailure(f"t.n{i}", "q", f"id{i}", error)


def test_the_list_keeps_the_last_failures_newest_first():
    recent = RecentFailures(kept=3)
    for i in range(5):
        recent.add(failure(i), 100 + i, float(i))
    assert len(recent) == 3
    assert [(r["task"], r["id"], r["worker"], r["time"]) for r in recent.records()] == [
        ("t.n4", "id4", 104, 4.0), ("t.n3", "id3", 103, 3.0), ("t.n2", "id2", 102, 2.0)]
    assert recent.records()[0] == {"task": "t.n4", "id": "id4", "queue": "q", "error": "ValueError: bad",
                                   "worker": 104, "time": 4.0}
    assert len(RecentFailures()) == 0 and KEPT == 20
    with pytest.raises(ValueError):
        RecentFailures(kept=0)


def test_records_are_small_whatever_the_task_raised():
    recent = RecentFailures()
    recent.add(TaskFailure("n" * 10_000, "q", "i" * 10_000, "E: " + "x" * 100_000), None, 1.0)
    [record] = recent.records()
    assert len(record["error"]) == len(record["task"]) == len(record["id"]) == TEXT_CHARS
    assert record["error"].startswith("E: xxx") and record["error"].endswith("…")
    assert len(json.dumps(record)) < 4 * TEXT_CHARS
    assert clip("short") == "short" and clip("abcdef", 4) == "abc…"


def test_records_are_copies():
    recent = RecentFailures()
    recent.add(failure(1), 1, 1.0)
    recent.records()[0]["task"] = "changed"
    assert recent.records()[0]["task"] == "t.n1"


def pool_record(name: str, host: str, *times: float) -> dict:
    recent = RecentFailures()
    for t in times:
        recent.add(failure(int(t)), 7, t)
    return {"name": name, "host": host, "failed": recent.records()}


def test_the_merge_is_newest_first_across_pools_and_bounded():
    pools = [pool_record("a", "h1", 1, 4, 6), pool_record("b", "h2", 2, 5)]
    merged = merge_failures(pools, 4, now=10.0)
    assert [(r["pool"], r["host"], r["time"]) for r in merged] == [
        ("a", "h1", 6), ("b", "h2", 5), ("a", "h1", 4), ("b", "h2", 2)]
    assert [r["age"] for r in merged] == [4.0, 5.0, 6.0, 8.0]
    assert merged[0]["task"] == "t.n6" and merged[0]["worker"] == 7
    assert merge_failures(pools, 0, now=10.0) == []
    assert len(merge_failures(pools, 100, now=10.0)) == 5


def test_the_merge_skips_what_it_cannot_read():
    good = pool_record("a", "h", 3)
    odd = [{"name": "x", "failed": "nope"}, {"name": "y"},
           {"name": "z", "failed": [None, {"task": "no time"}, {"time": "3"}, {"time": 1, "worker": True}]}]
    merged = merge_failures([good, *odd], 10, now=3.0)
    assert [(r["pool"], r["worker"]) for r in merged] == [("a", 7), ("z", None)]
    assert merged[0]["age"] == 0.0


def published(url: str) -> list[dict]:
    return [json.loads(text) for text in get_broker(url).taskqueue.live_pools()]


def test_a_worker_pool_lists_its_final_failures(url, start_pool, tmp_path):
    """A task that raised, a task nobody knows, soft and hard time limits
    and the last of a Retry policy's attempts are listed with their error
    text (and the worker that ran them); a success and an attempt its Retry
    policy runs again are not; StatusReader shows them newest first and
    takes them out of the pool's record."""
    pool = start_pool(get_broker(url), tasks.init, name="p", workers=1, status_interval=0.05)
    queue = get_queue(url)
    (tmp_path / "once").mkdir()
    (tmp_path / "always").mkdir()
    retried = Task(queue.wt.fail_times, retry=Retry(max=2, delay=0))
    submits = [lambda: queue.wt.fail("boom"), lambda: queue.wt.num(1), lambda: queue.nosuch(),
               lambda: retried(str(tmp_path / "once"), 1), lambda: retried(str(tmp_path / "always"), 9),
               lambda: Task(queue.wt.sleep, soft_timeout=0.2)(30),
               lambda: Task(queue.wt.sleep, timeout=0.2)(30)]
    results = []
    for submit in submits:  # one after the other: their order is known
        results.append(submit())
        assert results[-1].wait(WAIT)
    assert results[3].value == 2  # it failed once, then succeeded: never listed
    ids = [results[i].id for i in (6, 5, 4, 2, 0)]
    record = wait_until(lambda: next((p for p in published(url) if len(p["failed"]) == 5), None), WAIT)
    assert [f["id"] for f in record["failed"]] == ids
    hard, soft, exhausted, unknown, boom = record["failed"]
    assert boom["task"] == "wt.fail" and boom["error"] == "ValueError: boom" and boom["queue"] == "default"
    assert unknown["task"] == "nosuch" and unknown["error"] == "no such task"
    assert exhausted["error"] == "ConnectionError: attempt 3 fails"  # the last attempt, once
    assert soft["error"].startswith("SoftTimeLimitExceeded")
    assert hard["error"].startswith("TimeLimitExceeded")
    # One worker ran them all; the hard limit killed it (it was replaced).
    assert isinstance(boom["worker"], int) and boom["worker"] == soft["worker"] == hard["worker"]
    assert hard["worker"] not in {w["pid"] for w in record["workers"]}
    with StatusReader(url) as reader:
        status = reader.read(failed=2)
    assert [f["id"] for f in status["failed"]] == ids[:2]
    assert {f["pool"] for f in status["failed"]} == {"p"}
    assert "failed" not in status["pools"][0]
    assert status["failed"][0]["age"] >= 0
    pool.stop()


def test_no_password_in_an_error_text():
    """The dashboard shows no password (docs/dashboard.rst), nor does
    ``poolx status``: a URL in a task's error text is shown redacted, as
    poolx shows its own URLs — when the pool publishes it (before the text
    is cut, which could leave half a password unrecognisable) and when the
    status is read (a record published without it)."""
    error = "ConnectionError: cannot reach redis://app:s3cret@db.internal:6379/0 (and http://:pw@x/?token=t0k)"
    recent = RecentFailures()
    recent.add(TaskFailure("t.n", "q", "id", error), 7, 1.0)
    recent.add(TaskFailure("t.n", "q", "id2", "E: " + "x" * (TEXT_CHARS - 30) + " redis://:s3cret@h/0"), 7, 2.0)
    published = recent.records()
    for record in published:
        assert "s3cret" not in record["error"] and "s3c" not in record["error"]
    assert published[1]["error"] == (
        "ConnectionError: cannot reach redis://app:***@db.internal:6379/0 (and http://:***@x/?token=***)")
    raw = {"name": "p", "host": "h", "failed": [{"task": "t", "id": "i", "queue": "q", "error": error,
                                                 "worker": 1, "time": 1.0}]}
    [merged] = merge_failures([raw], 10, now=2.0)
    assert "s3cret" not in merged["error"] and "t0k" not in merged["error"]
    assert "redis://app:***@db.internal:6379/0" in merged["error"]
