"""Big payloads through shared memory: pickle protocol 5 out-of-band buffers.

A payload (a job's call, or a job's result) is pickled with protocol 5.  Any
buffer of at least ``threshold`` bytes in it — a numpy array or anything else
pickled through a :class:`pickle.PickleBuffer`, and a ``bytes`` or
``bytearray`` that is the value itself or sits in the top levels of tuples,
lists and dict values (pickle keeps those in band unless they are wrapped) —
is taken out of the pickle stream and written once into a *segment*: a file
in ``/dev/shm``.
Only the small pickle and the segment's name travel through the worker's
pipe; the receiver rebuilds the buffers from the segment (read-only buffers,
such as ``bytes``, with one ``pread`` copy; writable ones, such as numpy
arrays, as a private copy-on-write memory map, without a copy).  Everything
smaller keeps the plain pickle path: a payload that is a plain pickle starts
with pickle's own ``PROTO`` byte, a segment payload with :data:`MAGIC`.

Segments are plain files created with ``os.open`` and read with ``mmap``
rather than :mod:`multiprocessing.shared_memory`: no ``resource_tracker``
process is started and none warns about segments another process unlinked.

Who owns what — the pool's process owns every segment, since a worker may die
at any moment:

* Argument segments (``<prefix>a<n>``) are created by the parent in the
  caller's thread (:meth:`Segments.dumps_job`) and released by the supervisor
  when their job ends, whatever the ending (:meth:`Segments.release`, called
  from ``Supervisor.finish``).  A job re-queued after its worker died keeps
  its segment for the next worker.  A released segment is unlinked — or, if
  the worker only copied out of it (every buffer read-only: ``bytes``, a
  pickled call), renamed ``<prefix>f<n>`` and kept for the next argument
  (:data:`FREE_SEGMENTS`, :data:`FREE_BYTES`): writing into pages that
  already exist costs about two thirds of faulting in fresh ones.  A free
  segment is unlinked when the supervisor trims it (:meth:`Segments.trim`,
  :data:`FREE_SECONDS` after its release) or the pool finishes.  A segment
  a worker mapped (a writable buffer, such as a numpy array, which may
  outlive its job) is never reused.
* Result segments (``<prefix>r<worker pid>-<n>``) are created by a worker
  (:func:`dumps` with the pool's :class:`Spec`) and read by the parent
  (:meth:`Segments.loads`).  One the parent only copied out of (every
  buffer read-only, such as ``bytes``) is then renamed the worker's free
  result segment ``<prefix>r<worker pid>-f`` (:func:`free_result_name`), at
  most :data:`FREE_BYTES` of them in all; the worker renames it back to
  write its next big result into (:meth:`Spec.take_free`), and the parent
  unlinks it when :meth:`Segments.trim` finds it kept :data:`FREE_SECONDS`
  ago.  Each step is one ``rename``: the parent never renames a file the
  worker may still write, and the worker never writes a file the parent may
  still read.  Any other result segment is unlinked as soon as the parent
  has opened it, or without reading it when the job had already ended
  (:meth:`Segments.discard`).  When a worker dies, after its pipe was read
  to the end, the supervisor unlinks every segment that carries its pid
  (:meth:`Segments.worker_gone`): one it was writing, one it wrote but
  could not announce, its free one.
* When the pool's supervisor finishes, it unlinks whatever still carries
  the pool's prefix (:meth:`Segments.close`); at interpreter exit an
  ``atexit`` hook does the same for every pool of this process still open.
* A process killed without cleanup (SIGKILL, a default SIGTERM) leaves its
  segments; the next :class:`Segments` created on the machine unlinks them
  (:func:`sweep_orphans`, judging by each pool's lock file).

At most ``max_segments`` argument segments are pinned at once per pool;
beyond that (or when ``/dev/shm`` is full or missing) payloads travel
through the pipe as before.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import mmap
import os
import pickle
import struct
import threading
import time
from typing import Any

from poolx.engine.pickling import PROTOCOL, unpickle
from poolx.engine.wire import APPLY, FLAG_ACK, STARMAP

__all__ = ["DEFAULT_THRESHOLD", "FREE_BYTES", "FREE_SECONDS", "FREE_SEGMENTS", "MAGIC", "Segments", "Spec", "dumps",
           "free_result_name", "loads", "split", "write_segment"]

SHM_DIR = "/dev/shm"
DEFAULT_THRESHOLD = 1 << 20  # bytes; see benchmarks/bench_payload.py
DEFAULT_MAX_SEGMENTS = 64
RELEASE_ON_START = 64 * 1024  # pickled arguments this big are dropped as soon as the job starts
FREE_SEGMENTS = 2
"""Released argument segments a pool keeps for reuse, at most."""
FREE_BYTES = 1 << 30
"""Their size in all, at most (bytes)."""
FREE_SECONDS = 1.0
"""A free segment not reused within this many seconds is unlinked."""
MAGIC = 0x00  # first byte of a segment payload (a pickle starts with 0x80)
_WRAP_DEPTH = 4  # levels of tuples/lists/dicts searched for big bytes objects

_FRAME = struct.Struct("<BQ")  # pickle's FRAME opcode and its length
_FRAME_OP = 0x95
_UNFRAMED = 1 << 16  # pickle's FRAME_SIZE_TARGET: longer values go outside frames
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_BIG_BYTES_OPS = (0x42, 0x8E, 0x96)  # BINBYTES, BINBYTES8, BYTEARRAY8
_LARGE = {0x42: _U32, 0x8E: _U64, 0x96: _U64, 0x58: _U32, 0x8D: _U64}  # ... BINUNICODE(8)
_HEAD = struct.Struct("!BHI")  # magic, name length, buffer count
_ENTRY = struct.Struct("!QQB")  # offset, length, read-only
LOCK_PREFIX = "poolx-lock-"  # + "<pid>-<pool>": held by a live pool (see Segments)
_pools = itertools.count(1)
_open_prefixes: dict[str, int] = {}  # prefix -> its lock file's descriptor
_atexit_registered = False


class Spec:
    """What a worker needs to write result segments: picklable, tiny."""

    __slots__ = ("prefix", "threshold", "_names")

    def __init__(self, prefix: str, threshold: int) -> None:
        self.prefix = prefix
        self.threshold = threshold
        self._names: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return Spec, (self.prefix, self.threshold)

    def result_name(self) -> str:
        if self._names is None:
            self._names = itertools.count(1)
        return f"{self.prefix}r{os.getpid()}-{next(self._names)}"

    def take_free(self, name: str) -> bool:
        """Rename this worker's free result segment (the one the parent
        kept after reading an earlier result) to ``name``; False if there
        is none (the parent trimmed it, or has not read the last one)."""
        try:
            os.rename(os.path.join(SHM_DIR, free_result_name(self.prefix, os.getpid())),
                      os.path.join(SHM_DIR, name))
        except OSError:
            return False
        return True


def free_result_name(prefix: str, pid: int) -> str:
    """The name of worker ``pid``'s free result segment: one per worker,
    renamed by the parent after it copied a result out, taken back by the
    worker for its next one; under the worker's ``r<pid>-`` prefix, so
    :meth:`Segments.worker_gone` unlinks it with the rest."""
    return f"{prefix}r{pid}-f"


def available() -> bool:
    """True when ``/dev/shm`` exists and this process can create files in it."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


_PLAIN = (bytes, bytearray)  # pickled in band unless wrapped
_CONTAINERS = (tuple, list, dict)  # searched by _wrap


class _Big:
    """A ``bytes`` or ``bytearray`` to send out of band (pickle never offers
    them to ``buffer_callback`` by itself); rebuilt as the same type."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return type(self.data), (pickle.PickleBuffer(self.data),)


def _wrap(obj: Any, threshold: int, depth: int, memo: dict[int, Any]) -> Any:
    """``obj`` with big ``bytes``/``bytearray`` in its top levels wrapped;
    ``obj`` itself if there were none.

    ``memo`` (``id`` -> what that object became) keeps shared references and
    cycles as pickle keeps them: an object met twice is rebuilt once, and a
    list or dict is entered in ``memo`` before its items are walked.
    """
    key = id(obj)
    if key in memo:
        return memo[key]
    kind = type(obj)
    if kind in _PLAIN:
        if len(obj) < threshold:
            return obj
        memo[key] = wrapper = _Big(obj)
        return wrapper
    if depth <= 0:
        if kind in _CONTAINERS:  # met again higher up: it stays itself there too
            memo[key] = obj
        return obj
    if kind is list:
        new_list: list[Any] = []
        memo[key] = new_list
        new_list.extend(_wrap(item, threshold, depth - 1, memo) for item in obj)
        if any(new is not old for new, old in zip(new_list, obj, strict=True)):
            return new_list
    elif kind is dict:
        new_dict: dict[Any, Any] = {}
        memo[key] = new_dict
        for name, value in obj.items():
            new_dict[name] = _wrap(value, threshold, depth - 1, memo)
        if any(new_dict[name] is not value for name, value in obj.items()):
            return new_dict
    elif kind is tuple:
        memo[key] = obj  # a cycle back to a tuple (through a list) meets the original
        items = [_wrap(item, threshold, depth - 1, memo) for item in obj]
        if any(new is not old for new, old in zip(items, obj, strict=True)):
            memo[key] = new_tuple = tuple(items)
            return new_tuple
    else:
        return obj
    memo[key] = obj  # nothing inside changed (nothing refers to the copy)
    return obj


def _may_hold_big_bytes(data: bytes, threshold: int) -> bool:
    """False if the protocol-5 pickle ``data`` holds no ``bytes`` or
    ``bytearray`` of ``threshold`` bytes or more; a few microseconds.

    The C pickler writes its stream in frames of about 64 KiB, each cut at an
    opcode boundary, and writes a ``bytes``, ``bytearray`` or ``str`` of 64 KiB
    or more outside any frame, right after its opcode and length (a run of
    under 4 bytes between them is left unframed too).  Only those headers are
    read, hopping from one to the next.  Whatever does not parse that way, or
    a frame that could hold a big value, answers True: the caller then walks
    the value, at worst for nothing.  A wrong False would only keep a big
    value in the pickle stream.
    """
    least = threshold + 5  # a big bytes with the shortest header (BINBYTES)
    end = len(data)
    at = 2  # after PROTO 5
    while at < end:
        if data[at] == _FRAME_OP:
            length = _FRAME.unpack_from(data, at)[1]
            if length >= least:
                return True
            at += _FRAME.size + length
            continue
        for start in range(at, min(at + 4, end)):
            header = _LARGE.get(data[start])
            if header is not None and start + 1 + header.size <= end:
                length = header.unpack_from(data, start + 1)[0]
                if length >= _UNFRAMED and start + 1 + header.size + length <= end:
                    break
        else:
            return end - at >= least
        if data[start] in _BIG_BYTES_OPS and length >= threshold:
            return True
        at = start + 1 + header.size + length
    return False


def _nbytes(buffer: pickle.PickleBuffer) -> int:
    try:
        return buffer.raw().nbytes
    except BufferError:  # not contiguous: pickle copies it in band
        return -1


def has_big_bytes(items: Any, threshold: int) -> bool:
    """True if one of ``items`` is a ``bytes`` or ``bytearray`` of
    ``threshold`` bytes or more."""
    for item in items:
        if type(item) in _PLAIN and len(item) >= threshold:
            return True
    return False


def split(obj: Any, threshold: int, big_bytes: bool = False) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj`` with its buffers of ``threshold`` bytes or more out of
    band; return the pickle and those buffers (none: a plain pickle).

    ``big_bytes``: the caller saw a big ``bytes`` or ``bytearray`` in ``obj``'s top
    levels (it is then wrapped before pickling, not after a wasted copy).
    Small payloads cost one plain pickle, as without shared memory; big ones
    without a big ``bytes`` or ``bytearray`` are not walked for them
    (:func:`_may_hold_big_bytes`).
    """
    if big_bytes:
        obj = _wrap(obj, threshold, _WRAP_DEPTH, {})
    big: list[pickle.PickleBuffer] = []

    def keep_in_band(buffer: pickle.PickleBuffer) -> bool:
        if _nbytes(buffer) < threshold:
            return True
        big.append(buffer)
        return False

    data = pickle.dumps(obj, 5, buffer_callback=keep_in_band)
    if not big_bytes and len(data) >= threshold and _may_hold_big_bytes(data, threshold):
        wrapped = _wrap(obj, threshold, _WRAP_DEPTH, {})
        if wrapped is not obj:
            big.clear()
            data = pickle.dumps(wrapped, 5, buffer_callback=keep_in_band)
    return data, big


def dumps(obj: Any, spec: Spec | None) -> bytes:
    """Pickle a worker's result; with ``spec``, big buffers go to the
    worker's next result segment.  Raises what pickle raises."""
    if spec is None:
        return pickle.dumps(obj, PROTOCOL)
    threshold = spec.threshold
    data, big = split(obj, threshold, type(obj) in _PLAIN and len(obj) >= threshold)
    if not big:
        return data
    name = spec.result_name()
    try:
        return write_segment(name, data, big, reuse=spec.take_free(name))
    except OSError:  # /dev/shm full or gone: the pipe still works
        return pickle.dumps(obj, PROTOCOL)


def write_segment(name: str, data: bytes, buffers: list[pickle.PickleBuffer], reuse: bool = False) -> bytes:
    """Write ``buffers`` into a new segment ``name`` (with ``reuse``: into the
    existing file ``name``, cut to their size); return the payload that
    refers to it.  OSError (the segment is then gone) if ``/dev/shm`` is full."""
    views = [buffer.raw() for buffer in buffers]
    entries = []
    offset = 0
    for view in views:
        entries.append(_ENTRY.pack(offset, view.nbytes, view.readonly))
        offset += view.nbytes
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR if reuse else os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        at = 0
        for view in views:
            at = _write_all(fd, view, at)
        if reuse and os.fstat(fd).st_size > at:
            os.ftruncate(fd, at)
    except BaseException:
        _unlink(name)
        raise
    finally:
        os.close(fd)
    encoded = name.encode()
    return b"".join((_HEAD.pack(MAGIC, len(encoded), len(views)), encoded, *entries, data))


def _write_all(fd: int, view: memoryview, at: int) -> int:
    """Write ``view`` at offset ``at``; return the offset after it."""
    view = view.cast("B")
    while view:
        written = os.pwrite(fd, view, at)
        view = view[written:]
        at += written
    return at


def _reusable(payload: bytes | memoryview) -> tuple[str, int] | None:
    """The name and size of the segment of an argument payload whose
    buffers a worker only copied out (every one read-only); else None."""
    _, size, count = _HEAD.unpack_from(payload, 0)
    start = _HEAD.size + size
    total = 0
    for i in range(count):
        offset, length, readonly = _ENTRY.unpack_from(payload, start + i * _ENTRY.size)
        if not readonly:
            return None
        total = max(total, offset + length)
    return bytes(payload[_HEAD.size:start]).decode(), total


def segment_name(payload: bytes | memoryview) -> str | None:
    """The segment a payload refers to, or None for a plain pickle."""
    if not payload or payload[0] != MAGIC:
        return None
    _, size, _ = _HEAD.unpack_from(payload, 0)
    return bytes(payload[_HEAD.size : _HEAD.size + size]).decode()


def loads(payload: bytes | memoryview, unlink: bool = False, keep: str | None = None) -> Any:
    """Unpickle a payload :func:`dumps` made; with ``unlink``, remove its
    segment (even when unpickling fails).  With ``keep`` as well (the
    caller checked that every buffer is read-only, so all are copied out),
    the segment is renamed ``keep`` once its value is rebuilt instead: kept
    for reuse (it is unlinked if rebuilding fails)."""
    if payload[0] != MAGIC:  # never empty: a pickle has at least PROTO and STOP
        return unpickle(payload)
    _, size, count = _HEAD.unpack_from(payload, 0)
    start = _HEAD.size
    name = bytes(payload[start : start + size]).decode()
    start += size
    try:
        entries = [_ENTRY.unpack_from(payload, start + i * _ENTRY.size) for i in range(count)]
        data = memoryview(payload)[start + count * _ENTRY.size :]
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
        try:
            if unlink and keep is None:
                _unlink(name)
                unlink = False
            buffers: list[Any] = []
            mapping: memoryview | None = None
            for offset, length, readonly in entries:
                if readonly or length == 0:
                    # What pickle itself rebuilds a read-only buffer as: bytes.
                    buffers.append(os.pread(fd, length, offset) if length else b"")
                else:
                    if mapping is None:
                        end = max(o + n for o, n, _ in entries)
                        mapping = memoryview(mmap.mmap(fd, end, access=mmap.ACCESS_COPY))
                    buffers.append(mapping[offset : offset + length])
        finally:
            os.close(fd)
        value = unpickle(data, buffers)
        if unlink and keep is not None and mapping is None:
            try:
                os.rename(os.path.join(SHM_DIR, name), os.path.join(SHM_DIR, keep))
                unlink = False
            except OSError:  # (then unlinked below)
                pass
        return value
    finally:
        if unlink:
            _unlink(name)


def _unlink(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except OSError:
        pass


def _sweep(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    count = 0
    for name in names:
        if name.startswith(prefix):
            _unlink(name)
            count += 1
    return count


def _at_exit() -> None:
    mine = f"poolx-{os.getpid()}-"  # not in a forked child: the pools are its parent's
    for prefix in list(_open_prefixes):
        if prefix.startswith(mine):
            _sweep(prefix)
            _unlock(prefix)


def _lock(prefix: str) -> int:
    """Create and hold (shared flock) the lock file of the pool ``prefix``."""
    fd = os.open(os.path.join(SHM_DIR, LOCK_PREFIX + prefix[len("poolx-"):-1]), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _unlock(prefix: str) -> None:
    fd = _open_prefixes.pop(prefix, None)
    if fd is not None:
        _unlink(LOCK_PREFIX + prefix[len("poolx-"):-1])
        os.close(fd)


def sweep_orphans() -> int:
    """Unlink the segments of pools whose process died without cleaning up
    (SIGKILL, or SIGTERM with its default action); how many.

    Each pool holds a lock on its file ``poolx-lock-<pid>-<pool>`` while it
    lives (the kernel drops it when no process holds the file open), so a
    pool is judged dead by its lock, not by its pid: a process of another PID namespace sharing ``/dev/shm`` (containers
    of one Kubernetes pod) keeps its segments.
    """
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    count = 0
    for name in names:
        if not name.startswith(LOCK_PREFIX):
            continue
        try:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        except OSError:  # gone meanwhile, or not ours
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its pool lives
            os.close(fd)
            continue
        try:
            count += _sweep(f"poolx-{name[len(LOCK_PREFIX):]}-")
            _unlink(name)
        finally:
            os.close(fd)
    return count


class Segments:
    """The parent side of one pool's segments (see the module docstring).

    ``threshold`` None disables shared memory: every method is then a cheap
    no-op and every payload is a plain pickle.
    """

    def __init__(self, threshold: int | None, max_segments: int = DEFAULT_MAX_SEGMENTS) -> None:
        self.spec: Spec | None = None
        self.max_segments = max_segments
        self._lock = threading.Lock()
        self._pinned = 0
        self._names = itertools.count(1)
        self._free: list[tuple[str, int, float]] = []  # (name, size, released at): reusable segments
        self._free_results: dict[str, tuple[int, float]] = {}  # free result segment -> (size, kept at)
        self._closed = False
        self._pid = os.getpid()  # a forked child's copy writes no segment (see dumps_job)
        if threshold is None or not available():
            return
        global _atexit_registered
        sweep_orphans()
        prefix = f"poolx-{os.getpid()}-{next(_pools)}-"
        try:
            lock = _lock(prefix)
        except OSError:  # /dev/shm full: the pipe still works
            return
        self.spec = Spec(prefix, threshold)
        _open_prefixes[prefix] = lock
        if not _atexit_registered:
            _atexit_registered = True
            atexit.register(_at_exit)

    @property
    def pinned(self) -> int:
        """Argument segments alive now."""
        return self._pinned

    def dumps_job(self, func: Any, args: Any, kwds: Any, mode: int) -> bytes:
        """Pickle one job's call (any thread; ``func`` has been through
        :func:`~poolx.engine.pickling.portable`).  Big buffers go to a new
        argument segment while fewer than ``max_segments`` are pinned."""
        call = (func, args, kwds, mode)
        spec = self.spec
        if spec is None or os.getpid() != self._pid:
            # (In a forked child's copy of the pool, which refuses the job
            # anyway: the parent's segments and lock are not its own.)
            return pickle.dumps(call, PROTOCOL)
        threshold = spec.threshold
        if mode == APPLY:
            big_bytes = has_big_bytes(args, threshold) or (
                bool(kwds) and has_big_bytes(kwds.values(), threshold))
        else:  # a map chunk: its first item tells (the rest is found after pickling)
            first = args[0] if args else None
            items = first if mode == STARMAP and type(first) in (tuple, list) else (first,)
            big_bytes = has_big_bytes(items, threshold)
        data, big = split(call, threshold, big_bytes)
        if not big:
            return data
        with self._lock:
            if self._pinned >= self.max_segments:
                return pickle.dumps(call, PROTOCOL)
            self._pinned += 1
            free = self._take_free(sum(_nbytes(buffer) for buffer in big))
        name = f"{spec.prefix}a{next(self._names)}"
        try:
            if free is not None:
                try:
                    os.rename(os.path.join(SHM_DIR, free), os.path.join(SHM_DIR, name))
                except OSError:  # gone meanwhile (a sweep): write a new one
                    free = None
            return write_segment(name, data, big, reuse=free is not None)
        except BaseException as exc:
            with self._lock:
                self._pinned -= 1
            if isinstance(exc, OSError):  # /dev/shm full: the pipe still works
                return pickle.dumps(call, PROTOCOL)
            raise

    def job_payload(self, func: Any, args: Any, kwds: Any, mode: int) -> tuple[bytes, int]:
        """:meth:`dumps_job`, and the flags the job's payload needs:
        ``FLAG_ACK`` for a big pipe payload, which the supervisor drops once
        the job started.  (One that names a segment is small, and the
        segment must live until the job ends: the worker reads it.)"""
        data = self.dumps_job(func, args, kwds, mode)
        if len(data) >= RELEASE_ON_START and segment_name(data) is None:
            return data, FLAG_ACK
        return data, 0

    def _take_free(self, size: int) -> str | None:
        """(With the lock.)  The free segment to write ``size`` bytes into:
        the smallest that holds them, else the largest; None if none."""
        free = self._free
        if not free:
            return None
        fits = [entry for entry in free if entry[1] >= size]
        entry = min(fits, key=lambda e: e[1]) if fits else max(free, key=lambda e: e[1])
        free.remove(entry)
        return entry[0]

    def release(self, payload: bytes | None, reuse: bool = True) -> bool:
        """A job ended: unlink its argument segment, if it has one, or keep
        it for reuse (see the module docstring; never without ``reuse``: a
        worker that may still be reading it runs on).  True if it was kept:
        the caller then calls :meth:`trim` :data:`FREE_SECONDS` later."""
        if not payload or payload[0] != MAGIC:
            return False
        reusable = _reusable(payload) if reuse else None
        with self._lock:
            self._pinned = max(0, self._pinned - 1)
            spec = self.spec
            if reusable is not None and spec is not None and not self._closed and reusable[1] <= FREE_BYTES:
                free = self._free
                while free and (len(free) >= FREE_SEGMENTS
                                or sum(entry[1] for entry in free) + reusable[1] > FREE_BYTES):
                    _unlink(free.pop(0)[0])  # the oldest goes
                kept = f"{spec.prefix}f{next(self._names)}"
                try:
                    os.rename(os.path.join(SHM_DIR, reusable[0]), os.path.join(SHM_DIR, kept))
                except OSError:
                    return False
                free.append((kept, reusable[1], time.monotonic()))
                return True
        name = segment_name(payload)
        if name is not None:
            _unlink(name)
        return False

    def trim(self, now: float | None = None) -> None:
        """Unlink the free segments released or kept :data:`FREE_SECONDS`
        or more before ``now`` (default: now).  (A worker may have taken its
        free result segment meanwhile: the unlink then finds nothing.)"""
        if now is None:
            now = time.monotonic()
        with self._lock:
            old = [entry for entry in self._free if now - entry[2] >= FREE_SECONDS]
            for entry in old:
                self._free.remove(entry)
                _unlink(entry[0])
            for name, (_, kept) in list(self._free_results.items()):
                if now - kept >= FREE_SECONDS:
                    del self._free_results[name]
                    _unlink(name)

    @property
    def free(self) -> int:
        """Free argument segments kept for reuse now."""
        return len(self._free)

    def loads(self, payload: bytes | memoryview) -> tuple[Any, bool]:
        """Unpickle a result; return it, and True if its segment was kept
        for its worker's next result (the caller then calls :meth:`trim`
        :data:`FREE_SECONDS` later), else the segment is unlinked.

        A segment is kept when every buffer in it was copied out (read-only
        ones, such as ``bytes``: nothing maps it) and the pool's kept result
        segments stay within :data:`FREE_BYTES`: writing into pages that
        exist spares the worker the page faults, and the parent the freeing
        of the pages, on the result's path."""
        keep = self._keep_result(payload)
        try:
            return loads(payload, unlink=True, keep=keep), keep is not None
        except BaseException:  # not kept after all (unlinked): out of the budget, with
            if keep is not None:  # any older free one of that worker, which now has no record
                with self._lock:
                    self._free_results.pop(keep, None)
                _unlink(keep)
            raise

    def _keep_result(self, payload: bytes | memoryview) -> str | None:
        """The name to keep a result's segment under, or None (unlink it)."""
        spec = self.spec
        if spec is None or not payload or payload[0] != MAGIC:
            return None
        reusable = _reusable(payload)
        if reusable is None:
            return None
        name, size = reusable
        head = spec.prefix + "r"
        pid, dash, _ = name[len(head):].partition("-")
        if not name.startswith(head) or not dash or not pid.isdigit():
            return None
        keep = free_result_name(spec.prefix, int(pid))
        with self._lock:
            others = sum(entry[0] for other, entry in self._free_results.items() if other != keep)
            if self._closed or others + size > FREE_BYTES:
                return None
            self._free_results[keep] = (size, time.monotonic())
        return keep

    def discard(self, payload: bytes | memoryview) -> None:
        """A result nobody will read: unlink its segment."""
        name = segment_name(payload)
        if name is not None:
            _unlink(name)

    def worker_gone(self, pid: int) -> None:
        """Unlink the result segments a dead worker left behind, and its
        free one."""
        if self.spec is not None:
            with self._lock:
                self._free_results.pop(free_result_name(self.spec.prefix, pid), None)
            _sweep(f"{self.spec.prefix}r{pid}-")

    def close(self) -> None:
        """The pool is finished: unlink every segment it still has."""
        spec = self.spec
        with self._lock:
            self._closed = True  # a job released from now on is unlinked
        if spec is not None and spec.prefix in _open_prefixes:
            _sweep(spec.prefix)
            _unlock(spec.prefix)
            with self._lock:
                self._pinned = 0
                self._free.clear()
                self._free_results.clear()
