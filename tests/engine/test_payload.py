"""Big arguments and results through shared memory (poolx.engine.payload).

Every path a segment can take ends with no segment left in /dev/shm:
delivered results, a worker killed mid-transfer or holding big arguments,
time limits, terminate, interpreter exit.  Under fork, forkserver and spawn.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import poolx
from poolx.engine import payload
from poolx.exceptions import PoolTerminated, TimeLimitExceeded, WorkerLostError
from tests.conftest import wait_until
from tests.engine import payload_tasks as tasks

MB = 1 << 20
pytestmark = pytest.mark.skipif(not payload.available(), reason="needs a writable /dev/shm")


def prefix() -> str:
    """Every segment of every pool of this process starts with this."""
    return f"poolx-{os.getpid()}-"


def ours() -> list[str]:
    return tasks.segments(prefix())


def busy() -> list[str]:
    """Our segments but the free ones a pool keeps for reuse."""
    return tasks.busy(prefix())


@pytest.fixture
def shm_pool(ctx):
    """A pool with a small threshold, so that tests stay cheap."""
    p = poolx.Pool(2, context=ctx, shm_threshold=64 * 1024)
    yield p
    p.terminate()
    p.join()
    assert ours() == []


def test_big_argument_travels_through_a_segment_released_with_its_result(shm_pool):
    big = b"a" * (256 * 1024)
    assert shm_pool.apply(tasks.seen, (prefix(), big)) == 1
    assert busy() == []
    assert shm_pool.apply(tasks.seen, (prefix(), b"small")) == 0  # the pipe, as before
    assert shm_pool.apply(tasks.seen, (prefix(),), {"data": bytearray(big)}) == 1
    assert busy() == []


def test_values_come_back_equal_and_of_their_type(shm_pool):
    n = 300 * 1024
    assert shm_pool.apply(tasks.describe, (b"xyz" * n,)) == ("bytes", 3 * n, b"xyz")
    assert shm_pool.apply(tasks.describe, (bytearray(b"xyz" * n),)) == ("bytearray", 3 * n, b"xyz")
    assert shm_pool.apply(tasks.describe, (pickle.PickleBuffer(bytearray(b"xyz" * n)),))[1:] == (3 * n, b"xyz")
    result = shm_pool.apply(tasks.make, (n,))
    assert type(result) is bytes and result == b"r" * n
    result = shm_pool.apply(tasks.make, (n, "bytearray"))
    assert type(result) is bytearray and result == bytearray(b"r" * n)
    result.extend(b"more")  # a private, writable copy
    assert shm_pool.apply(tasks.make_many, (n, 3)) == [b"%d" % i * n for i in range(3)]
    assert busy() == []


def test_map_imap_and_starmap_chunks(shm_pool):
    items = [bytes([i]) * (100 * 1024) for i in range(8)]
    assert shm_pool.map(tasks.size, items, chunksize=2) == [100 * 1024] * 8
    assert list(shm_pool.imap(tasks.describe, items)) == [
        ("bytes", 100 * 1024, bytes([i]) * 3) for i in range(8)]
    assert sorted(shm_pool.imap_unordered(tasks.make, [70 * 1024] * 4)) == [b"r" * 70 * 1024] * 4
    assert shm_pool.starmap(tasks.seen, [(prefix(), item) for item in items[:2]], chunksize=2) == [1, 1]
    assert busy() == []


def test_worker_killed_while_holding_big_arguments(shm_pool):
    with pytest.raises(WorkerLostError):
        shm_pool.apply(tasks.kill_self, (b"k" * (200 * 1024),))
    assert busy() == []
    assert shm_pool.apply(tasks.size, (b"k" * (200 * 1024),)) == 200 * 1024


def test_worker_killed_while_writing_a_big_result(shm_pool):
    with pytest.raises(WorkerLostError):
        shm_pool.apply(tasks.die_while_writing_result, (200 * 1024,))
    assert busy() == []
    assert shm_pool.apply(tasks.make, (200 * 1024,)) == b"r" * 200 * 1024


def test_time_limit_releases_arguments_and_result(shm_pool):
    result = shm_pool.apply_async(tasks.sleep_then_make, (30, 200 * 1024), timeout=0.3)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert busy() == []
    # A job whose big arguments are pinned while it runs past its limit.
    result = shm_pool.apply_async(tasks.seen, (prefix(), b"t" * (200 * 1024)), timeout=30)
    assert result.get(timeout=30) == 1
    assert busy() == []


def test_terminate_releases_everything(ctx):
    p = poolx.Pool(2, context=ctx, shm_threshold=64 * 1024)
    results = [p.apply_async(tasks.sleep_then_make, (30, 200 * 1024), {}) for _ in range(2)]
    waiting = [p.apply_async(tasks.size, (b"w" * (200 * 1024),)) for _ in range(3)]
    wait_until(lambda: len(ours()) >= 3, timeout=30)  # arguments are pinned
    assert len(ours()) == 3
    p.terminate()
    p.join()
    assert ours() == []
    for r in results + waiting:
        with pytest.raises((PoolTerminated, WorkerLostError)):
            r.get(timeout=10)


def test_bounded_number_of_pinned_argument_segments(fork_ctx):
    with poolx.Pool(1, context=fork_ctx, shm_threshold=1024) as p:
        limit = p._supervisor.segments.max_segments
        results = [p.apply_async(tasks.seen, (prefix(), b"b" * 4096)) for _ in range(limit * 2)]
        counts = [r.get(timeout=60) for r in results]
        assert 1 <= max(counts) <= limit
        assert all(r.successful() for r in results)
    assert ours() == []


def test_disabled_keeps_everything_on_the_pipe(fork_ctx):
    with poolx.Pool(1, context=fork_ctx, shm_threshold=None) as p:
        assert p.apply(tasks.seen, (prefix(), b"x" * (4 * MB))) == 0
        assert p.apply(tasks.make, (2 * MB,)) == b"r" * 2 * MB


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="shm_threshold"):
        poolx.Pool(1, shm_threshold=0)
    with pytest.raises(TypeError, match="shm_threshold"):
        poolx.Pool(1, shm_threshold=[1])


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_interpreter_exit_releases_everything_without_warnings(tmp_path, method):
    script = tmp_path / "exit_busy.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        import poolx
        from tests.engine import payload_tasks as tasks

        if __name__ == "__main__":
            ctx = multiprocessing.get_context({method!r})
            pool = poolx.Pool(2, context=ctx, shm_threshold=64 * 1024)
            prefix = f"poolx-{{os.getpid()}}-"
            assert pool.apply(tasks.seen, (prefix, b"x" * 200000)) == 1
            r = [pool.apply_async(tasks.sleep_with, (30, b"s" * 200000)) for _ in range(2)]
            q = pool.apply_async(tasks.size, (b"q" * 200000,))
            deadline = time.monotonic() + 30
            while len(tasks.segments(prefix)) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            print(os.getpid(), len(tasks.segments(prefix)), tasks.segments(prefix), flush=True)
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid, pinned, names = proc.stdout.split(maxsplit=2)
    assert pinned == "3", names
    assert tasks.segments(f"poolx-{pid}-") == []
    assert "resource_tracker" not in proc.stderr
    assert "leaked" not in proc.stderr


def test_no_resource_tracker_is_started():
    code = textwrap.dedent(f"""
        import multiprocessing, sys
        sys.path.insert(0, {os.getcwd()!r})
        import poolx
        from multiprocessing import resource_tracker
        from tests.engine import payload_tasks as tasks

        with poolx.Pool(1, context=multiprocessing.get_context("fork"), shm_threshold=1024) as p:
            assert p.apply(tasks.make, (4096,)) == b"r" * 4096
            assert p.apply(tasks.size, (b"s" * 4096,)) == 4096
        print(resource_tracker._resource_tracker._pid)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "None"


def test_payloads_round_trip_in_process():
    spec = payload.Spec(f"{prefix()}unit-", 1024)
    small = payload.dumps({"a": b"x" * 10}, spec)
    assert small[:1] == pickle.PROTO  # a plain pickle
    assert payload.loads(small) == {"a": b"x" * 10}
    value = (b"x" * 4096, [bytearray(b"y" * 4096), b"z"], {"k": b"w" * 5000})
    data = payload.dumps(value, spec)
    assert data[0] == payload.MAGIC and len(data) < 1024
    assert payload.loads(data, unlink=True) == value
    assert ours() == []
    assert payload.dumps(None, None) == pickle.dumps(None, pickle.HIGHEST_PROTOCOL)


def test_numpy_arrays_travel_out_of_band(shm_pool):
    np = pytest.importorskip("numpy", reason="numpy is optional (the bench extra installs it)")
    array = np.arange(100_000, dtype=np.float64)
    assert shm_pool.apply(tasks.numpy_sum, (array,)) == float(array.sum())
    assert shm_pool.apply(tasks.seen, (prefix(), array)) == 1
    back = shm_pool.apply(tasks.mutate, (np.zeros(100_000, dtype=np.uint8),))
    assert back[0] == 255 and back.flags.writeable
    back[1] = 7  # private: nothing else sees it
    readonly = np.ones(100_000)
    readonly.flags.writeable = False
    assert shm_pool.apply(tasks.numpy_sum, (readonly,)) == 100_000.0
    assert busy() == []


def test_executor_calls_and_results_travel_through_segments(ctx):
    with poolx.ProcessPoolExecutor(2, mp_context=ctx, shm_threshold=64 * 1024) as ex:
        assert ex.submit(tasks.seen, prefix(), b"e" * (200 * 1024)).result(timeout=60) == 1
        assert ex.submit(tasks.seen, prefix(), b"e").result(timeout=60) == 0
        assert ex.submit(tasks.make, 200 * 1024).result(timeout=60) == b"r" * 200 * 1024
        assert list(ex.map(tasks.size, [b"m" * (100 * 1024)] * 3)) == [100 * 1024] * 3
        assert busy() == []
    with poolx.ProcessPoolExecutor(1, mp_context=ctx, shm_threshold=None) as ex:
        assert ex.submit(tasks.seen, prefix(), b"e" * (200 * 1024)).result(timeout=60) == 0
    assert ours() == []


@pytest.mark.parametrize("threshold", [64 * 1024, None])
def test_read_only_numpy_arrays_arrive_writable_as_with_the_standard_library(fork_ctx, threshold):
    """The standard library's pool (pickle protocol 4) rebuilds every array as
    a writable copy: worker code that changes its argument in place works."""
    np = pytest.importorskip("numpy", reason="numpy is optional (the bench extra installs it)")
    with poolx.Pool(1, context=fork_ctx, shm_threshold=threshold) as pool:
        for n in (1000, 256 * 1024):  # in the pickle stream, and out of band
            array = np.arange(n, dtype=np.int64)
            array.flags.writeable = False
            assert pool.apply(tasks.writable, (array,)) is True
            assert (pool.apply(tasks.bump, (array,)) == array + 1).all()
            assert not array.flags.writeable and array[1] == 1  # the caller's is untouched
            back = pool.apply(tasks.make_read_only, (n,))
            assert back.flags.writeable and (back == 0).all() and len(back) == n
            back += 1
            fortran = np.asfortranarray(np.arange(n, dtype=np.float64).reshape(2, -1))
            fortran.flags.writeable = False
            again = pool.apply(tasks.echo, (fortran,))
            assert again.flags.writeable and again.flags.f_contiguous and (again == fortran).all()
    assert ours() == []


def test_a_job_sent_again_after_its_worker_died_keeps_its_segment(fork_ctx):
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        p.map(tasks.size, [b"w"] * 50, chunksize=1)  # short jobs: the worker gets several at once
        doomed = p.apply_async(tasks.kill_self, (b"k" * (200 * 1024),))
        held = [p.apply_async(tasks.describe, (bytes([i]) * (200 * 1024),)) for i in range(3)]
        with pytest.raises(WorkerLostError):
            doomed.get(timeout=60)
        assert [r.get(timeout=60) for r in held] == [("bytes", 200 * 1024, bytes([i]) * 3) for i in range(3)]
    assert ours() == []


def test_no_shared_memory_without_a_writable_dev_shm(monkeypatch):
    monkeypatch.setattr(payload, "available", lambda: False)
    segments = payload.Segments(1024)
    assert segments.spec is None
    data = segments.dumps_job(tasks.size, (b"x" * 4096,), {}, 0)
    assert data[:1] == pickle.PROTO


def test_a_full_dev_shm_falls_back_to_the_pipe(monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(payload, "_write_all", full)
    segments = payload.Segments(1024)
    try:
        data = segments.dumps_job(tasks.size, (b"x" * 4096,), {}, 0)
        assert data[:1] == pickle.PROTO and segments.pinned == 0
        spec = payload.Spec(f"{prefix()}unit-", 1024)
        assert payload.dumps(b"y" * 4096, spec)[:1] == pickle.PROTO
        assert ours() == []
    finally:
        segments.close()


def test_a_result_nobody_reads_is_discarded():
    spec = payload.Spec(f"{prefix()}unit-", 1024)
    data = payload.dumps(b"y" * 4096, spec)
    assert len(ours()) == 1
    payload.Segments(None).discard(data)
    assert ours() == []


def test_map_chunks_of_big_bytes_and_starmap_tuples(shm_pool):
    big = [bytes([i]) * (100 * 1024) for i in range(4)]
    # The first item is small: the big ones are found after pickling.
    assert shm_pool.map(tasks.size, [b"small", *big], chunksize=5) == [5] + [100 * 1024] * 4
    assert shm_pool.starmap(tasks.seen, [(prefix(), b) for b in big], chunksize=4) == [1] * 4
    assert shm_pool.starmap(tasks.seen, [[prefix(), b] for b in big], chunksize=4) == [1] * 4
    assert busy() == []


def test_shared_references_and_cycles_keep_their_identity_in_process():
    spec = payload.Spec(f"{prefix()}unit-", 1024)
    big = b"b" * 4096
    inner = [big, bytearray(big)]
    cyclic: list = [big]
    cyclic.append(cyclic)
    box: dict = {"big": big}
    box["self"] = box
    value = (inner, inner, {"k": inner, "b": big}, cyclic, box)
    data = payload.dumps(value, spec)
    assert data[0] == payload.MAGIC
    back = payload.loads(data, unlink=True)
    assert back[0] is back[1] is back[2]["k"] and back[0][0] is back[2]["b"] is back[3][0]
    assert back[3][-1] is back[3] and back[4]["self"] is back[4]
    assert back[0] == inner and back[4]["big"] is back[0][0]
    assert ours() == []


def test_shared_references_and_cycles_keep_their_identity(shm_pool):
    """As with the standard library's pool and with shared memory off."""
    shared = [b"x" * (256 * 1024)]
    assert shm_pool.apply(tasks.same, (shared, shared)) == (True, True)
    cyclic: list = [b"x" * (256 * 1024)]
    cyclic.append(cyclic)
    assert shm_pool.apply(tasks.is_cyclic, (cyclic,)) is True
    first, second = shm_pool.apply(tasks.make_shared, (256 * 1024,))
    assert first is second
    assert busy() == []


def test_a_big_payload_without_big_bytes_is_not_walked(monkeypatch):
    """Only a pickle that may hold a big bytes/bytearray is walked for them."""
    walked = []
    real = payload._wrap

    def wrap(obj, *args):
        walked.append(obj)
        return real(obj, *args)

    monkeypatch.setattr(payload, "_wrap", wrap)
    threshold = 256 * 1024
    for value in ([float(i) for i in range(100_000)], {str(i): i for i in range(100_000)},
                  [list(range(100)) for _ in range(2000)], ["B" * 100 + str(i) for i in range(5000)],
                  [b"%d" % i * (threshold // 2) for i in range(4)]):
        data, big = payload.split(value, threshold)
        assert len(data) >= threshold and walked == [] and big == [] and pickle.loads(data) == value
    for value in ([1, [b"n" * threshold]], {"k": (bytearray(threshold),)}, (b"b" * (threshold + 1),),
                  ["s" * threshold, 66, b"y" * threshold], [b"%d" % i * (threshold // 2) for i in range(4)] + [b"z" * threshold]):
        data, big = payload.split(value, threshold)
        assert walked[:1] == [value] and len(big) == 1 and pickle.loads(data, buffers=big) == value
        walked.clear()


def test_executor_gives_numpy_arrays_back_writable_as_the_standard_library(fork_ctx):
    np = pytest.importorskip("numpy", reason="numpy is optional (the bench extra installs it)")
    array = np.arange(1000)
    array.flags.writeable = False
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as ex:
        assert ex.submit(tasks.writable, array).result(timeout=60) is True
        assert ex.submit(tasks.make_read_only, 1000).result(timeout=60).flags.writeable


def test_a_new_pool_removes_the_segments_of_a_pool_whose_process_was_killed(tmp_path):
    """SIGTERM with its default action (like SIGKILL) runs no cleanup; the
    next pool created on the machine removes what that process left."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, os, sys
        sys.path.insert(0, {os.getcwd()!r})
        import poolx
        from tests.engine import payload_tasks as tasks

        if __name__ == "__main__":
            pool = poolx.Pool(1, context=multiprocessing.get_context("spawn"), shm_threshold=64 * 1024)
            pool.apply_async(tasks.sleep_with, (5, b"k" * 200000))
            print(os.getpid(), flush=True)
            sys.stdin.read()
        """))
    # Its worker outlives it a few seconds and reports a broken pipe: stderr is not ours to read.
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        pid = proc.stdout.readline().strip()
        left = tasks.segments(f"poolx-{pid}-")
        assert len(left) == 1
        # A live pool's segments are kept.
        poolx.Pool(1, shm_threshold=64 * 1024).terminate()
        assert tasks.segments(f"poolx-{pid}-") == left
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert tasks.segments(f"poolx-{pid}-") == left
    pool = poolx.Pool(1, shm_threshold=64 * 1024)
    try:
        assert tasks.segments(f"poolx-{pid}-") == []
        assert [name for name in os.listdir("/dev/shm") if name.startswith("poolx-") and pid in name] == []
    finally:
        pool.terminate()
        pool.join()


def test_a_kept_array_pins_its_whole_segment_until_it_is_dropped():
    np = pytest.importorskip("numpy", reason="numpy is optional (the bench extra installs it)")
    spec = payload.Spec(f"{prefix()}pin-", 1024)
    data = payload.dumps([np.ones(1 << 20, dtype=np.uint8), np.arange(4096, dtype=np.uint8)], spec)
    name = payload.segment_name(data)

    def mapped() -> bool:
        with open("/proc/self/maps") as maps:
            return name in maps.read()

    big, small = payload.loads(data, unlink=True)
    assert ours() == [] and mapped()
    del big
    assert mapped()  # the small array keeps the whole segment
    small = small.copy()  # what the docs advise: keep a copy
    assert not mapped() and small[5] == 5


def free() -> list[str]:
    return sorted(set(ours()) - set(busy()))


def test_a_released_read_only_segment_is_kept_and_reused(fork_ctx):
    """A segment the worker only copied out of is renamed free when its job
    ends, and the next big argument is written into it (no fresh pages)."""
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        assert p.apply(tasks.describe, (b"a" * (200 * 1024),)) == ("bytes", 200 * 1024, b"aaa")
        assert busy() == [] and len(free()) == 1
        inode = os.stat(f"/dev/shm/{free()[0]}").st_ino
        for n, byte in ((100 * 1024, b"b"), (300 * 1024, b"c")):  # cut to size, then grown
            assert p.apply(tasks.seen, (prefix(), byte * n)) == 1  # the free one is in use
            assert p.apply(tasks.describe, (byte * n,)) == ("bytes", n, byte * 3)
            [name] = free()
            assert os.stat(f"/dev/shm/{name}").st_ino == inode and os.path.getsize(f"/dev/shm/{name}") == n
    assert ours() == []


def test_free_segments_are_bounded_and_trimmed(fork_ctx):
    with poolx.Pool(2, context=fork_ctx, shm_threshold=64 * 1024) as p:
        results = [p.apply_async(tasks.sleep_with, (0.2, bytes([i]) * (100 * 1024))) for i in range(6)]
        assert [r.get(timeout=60) for r in results] == [100 * 1024] * 6
        assert busy() == [] and 1 <= len(free()) <= payload.FREE_SEGMENTS
        wait_until(lambda: ours() == [], timeout=payload.FREE_SECONDS + 30)  # unused: unlinked


def test_a_segment_a_worker_mapped_is_never_reused(fork_ctx):
    """A writable buffer (a numpy array, a PickleBuffer of a bytearray) is
    mapped by the worker, which may keep it after its job: its segment goes."""
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        assert p.apply(tasks.describe, (pickle.PickleBuffer(bytearray(b"m" * (200 * 1024))),))[1] == 200 * 1024
        assert ours() == []


def test_an_accept_callback_does_not_pin_the_segment_of_its_job(fork_ctx):
    """A job with an accept_callback is acknowledged by its worker, and a
    started job's pipe payload is dropped then; a segment payload must stay
    until the job ends, or its segment is never released: each such call
    left its segment in /dev/shm for the pool's life (and after
    max_segments of them, big arguments no longer used shared memory)."""
    accepted: list = []
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        for _ in range(3):
            result = p.apply_async(tasks.size, (b"x" * (200 * 1024),),
                                   accept_callback=lambda pid, when: accepted.append(pid))
            assert result.get(timeout=60) == 200 * 1024
        wait_until(lambda: len(accepted) == 3, timeout=30)
        assert busy() == []
    assert ours() == []


def test_a_terminated_job_that_runs_on_never_reads_the_next_argument(fork_ctx, tmp_path):
    """terminate_job with a signal the worker ignores ends the job at once,
    while its worker may still be reading its argument segment; that
    segment must not be kept for reuse: the next big argument was written
    into it, and the job (which runs on) read that one."""
    import signal

    from poolx.exceptions import Terminated

    gate, record = str(tmp_path / "gate"), str(tmp_path / "record")
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024,
                    initializer=tasks.reads_wait_for, initargs=(gate,)) as p:
        first = p.apply_async(tasks.record_first_byte, (record, b"a" * (200 * 1024)))
        wait_until(lambda: any(w["job"] is not None for w in p.stats()["workers"]), timeout=30)
        first.terminate(signal.SIGUSR2)
        with pytest.raises(Terminated):
            first.get(timeout=30)
        second = p.apply_async(tasks.size, (b"b" * (200 * 1024),))
        with open(gate, "w"):
            pass
        assert second.get(timeout=60) == 200 * 1024
        wait_until(lambda: os.path.exists(record) and os.path.getsize(record) == 1, timeout=30)
        with open(record, "rb") as f:
            assert f.read() == b"a"
    assert ours() == []


def test_a_forked_childs_copy_of_the_pool_never_touches_its_segments(fork_ctx):
    """A forked child (a web server's worker forked after its app made a
    pool) calling its copy of the pool gets PoolNotRunning; it must not
    first write the argument into the parent's segments: it took the
    parent's free segment (renamed away under a name the parent would use
    next) and left it behind."""
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        assert p.apply(tasks.size, (b"x" * (200 * 1024),)) == 200 * 1024
        kept = ours()
        assert len(kept) == 1 and busy() == []
        tasks.HOLDER.append(p)
        try:
            child = fork_ctx.Process(target=tasks.copy_refuses_a_big_argument)
            child.start()
            child.join(60)
        finally:
            tasks.HOLDER.clear()
        assert child.exitcode == 0
        assert ours() == kept  # the parent's free segment, untouched
        assert p.apply(tasks.seen, (prefix(), b"y" * (200 * 1024))) == 1
        assert busy() == []
    assert ours() == []


def test_a_read_result_segment_is_kept_and_taken_back_in_process():
    """The parent renames a result segment it copied out of to its worker's
    free name; the worker's next result is written into that file (pages
    that exist: no page faults), cut to size or grown."""
    segments = payload.Segments(64 * 1024)
    try:
        spec = segments.spec
        value, kept = segments.loads(payload.dumps(b"a" * (200 * 1024), spec))
        assert value == b"a" * (200 * 1024) and kept
        free_name = payload.free_result_name(spec.prefix, os.getpid())
        assert busy() == [] and free() == [free_name]
        inode = os.stat(f"/dev/shm/{free_name}").st_ino
        for n, byte in ((100 * 1024, b"b"), (300 * 1024, b"c")):
            data = payload.dumps(byte * n, spec)
            assert free() == []  # taken: written into
            name = payload.segment_name(data)
            assert os.stat(f"/dev/shm/{name}").st_ino == inode and os.path.getsize(f"/dev/shm/{name}") == n
            assert segments.loads(data) == (byte * n, True)
            assert free() == [free_name]
        # A writable buffer is mapped, not copied: its segment goes.
        assert segments.loads(payload.dumps(bytearray(b"d" * (200 * 1024)), spec)) == (bytearray(b"d" * (200 * 1024)), False)
        assert busy() == []
    finally:
        segments.close()
    assert ours() == []


def test_a_read_result_segment_is_reused_by_its_worker(fork_ctx, monkeypatch):
    monkeypatch.setattr(payload, "FREE_SECONDS", 300.0)  # no trim during the test, however slow the machine
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        pid = p.apply(os.getpid)
        assert p.apply(tasks.make, (200 * 1024,)) == b"r" * (200 * 1024)
        [kept] = free()
        assert kept.endswith(f"-r{pid}-f")
        inode = os.stat(f"/dev/shm/{kept}").st_ino
        for n in (100 * 1024, 300 * 1024):  # cut to size, then grown
            assert p.apply(tasks.make, (n,)) == b"r" * n
            assert free() == [kept] and os.stat(f"/dev/shm/{kept}").st_ino == inode
            assert os.path.getsize(f"/dev/shm/{kept}") == n
        result = p.apply(tasks.make, (200 * 1024, "bytearray"))  # written into the kept one, which
        assert type(result) is bytearray and free() == []  # the parent maps: it is not kept again
        del result
        assert ours() == []
    assert ours() == []


def test_kept_result_segments_are_bounded_and_trimmed(fork_ctx, monkeypatch):
    monkeypatch.setattr(payload, "FREE_BYTES", 300 * 1024)  # room for one 200 KB result, not two
    with poolx.Pool(2, context=fork_ctx, shm_threshold=64 * 1024) as p:
        results = [p.apply_async(tasks.sleep_then_make, (0.2, 200 * 1024)) for _ in range(4)]
        assert [r.get(timeout=60) for r in results] == [b"r" * (200 * 1024)] * 4
        assert busy() == [] and len(free()) == 1
        wait_until(lambda: ours() == [], timeout=payload.FREE_SECONDS + 30)  # unused: unlinked


def test_a_dead_workers_kept_result_segment_is_unlinked(fork_ctx, monkeypatch):
    monkeypatch.setattr(payload, "FREE_SECONDS", 300.0)
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        pid = p.apply(os.getpid)
        assert p.apply(tasks.make, (200 * 1024,)) == b"r" * (200 * 1024)
        assert [name for name in free() if name.endswith(f"-r{pid}-f")]
        with pytest.raises(WorkerLostError):
            p.apply(tasks.kill_self, (b"",))
        wait_until(lambda: ours() == [], timeout=30)
        assert p.apply(tasks.make, (200 * 1024,)) == b"r" * (200 * 1024)  # a new worker, a new segment


def test_a_result_that_fails_to_unpickle_leaves_no_kept_segment_past_free_seconds(fork_ctx, monkeypatch):
    """A kept segment is renamed only once its value is rebuilt: a result
    that fails to unpickle left it kept with no trim scheduled, for as
    long as the worker lived (found in review)."""
    monkeypatch.setattr(payload, "FREE_SECONDS", 0.2)
    with poolx.Pool(1, context=fork_ctx, shm_threshold=64 * 1024) as p:
        with pytest.raises(Exception, match="cannot be rebuilt"):
            p.apply(tasks.unloadable, (200 * 1024,))
        assert p.apply(os.getpid)  # the worker lives on, idle
        wait_until(lambda: ours() == [], timeout=payload.FREE_SECONDS + 10)


def test_an_argument_whose_del_blocks_does_not_hang_the_next_job(fork_ctx):
    """A job's arguments are freed inside the job, where its time limit
    covers a ``__del__`` that blocks; only big plain ``bytes`` wait until
    the result is sent.  Freed after the job, such an argument left the
    worker looking idle while it hung, and the next job never started nor
    timed out (found in review)."""
    with poolx.Pool(1, context=fork_ctx) as p:
        try:
            p.apply(tasks.take, (tasks.BlocksWhenFreedInAWorker(),), timeout=2)
        except TimeLimitExceeded:
            pass  # the behaviour before da111e5
        nxt = p.apply_async(os.getpid, timeout=2)
        try:
            nxt.get(timeout=30)
        except TimeLimitExceeded:
            pass  # acceptable too: it did not hang
        except multiprocessing.TimeoutError:
            pytest.fail("a job with timeout=2 neither ran nor timed out within 30 s")
        finally:
            p.terminate()


def test_arguments_are_freed_before_the_result_is_pickled(fork_ctx):
    """A job's memory peak (what memory_limit samples) is not raised by
    holding big arguments while a big result is pickled and sent."""
    with poolx.Pool(1, context=fork_ctx, shm_threshold=None) as p:
        before, during = p.apply(tasks.rss_while_result_pickled, (b"x" * (64 * MB),))
    assert during < before - 32 * MB, (before / MB, during / MB)
