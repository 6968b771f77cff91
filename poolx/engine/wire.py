"""The wire between the supervisor and one worker: framing and message codecs.

Who talks here: the supervisor thread (parent side, non-blocking raw fd) and
one worker process (child side, a blocking ``multiprocessing.Connection``)
over their private duplex socket.  Frames use ``Connection``'s own format
(a 4-byte big-endian signed length, or ``-1`` followed by an 8-byte length),
so the child can use ``send_bytes``/``recv_bytes`` while the parent reads and
writes without ever blocking (a blocked parent could deadlock against a
worker that is itself blocked writing a large result).

Every message starts with a one-byte kind.  Job identity (the ``seq``) always
travels *outside* the pickle, so a payload that fails to unpickle still fails
exactly the job it belongs to.

Parent -> worker::

    JOBS   kind | count:u32 | count x (seq:i64 flags:u8 size:u32) | payloads
    STOP   kind                                 finish the jobs held, then exit
    QUIT   kind                                 finish the current job, then exit

Worker -> parent::

    READY       kind                            initializer done
    INIT_FAILED kind | pickled exception        initializer raised
    ACCEPTED    kind | seq:i64 | time:f64        job started (only when asked)
    RESULT      kind | seq:i64 ok:u8 dur:f64 | pickled value or exception
    RETIRING    kind | reason (utf-8)           leaving after this message

What goes inside the payloads is pickled by :mod:`poolx.engine.pickling`.
"""

from __future__ import annotations

import os
import struct

# Message kinds.
JOBS = 0x4A  # 'J'
STOP = 0x53  # 'S'
QUIT = 0x51  # 'Q'
READY = 0x49  # 'I'
INIT_FAILED = 0x46  # 'F'
ACCEPTED = 0x41  # 'A'
RESULT = 0x52  # 'R'
RETIRING = 0x58  # 'X'

# Job modes: how the worker calls the function.
APPLY = 0  # func(*args, **kwds)
MAP = 1  # [func(x) for x in args]
STARMAP = 2  # [func(*x) for x in args]

# Job flags.
FLAG_ACK = 0x01  # send ACCEPTED when the job starts

_JOB_HEADER = struct.Struct("!qBI")
_COUNT = struct.Struct("!I")
_SEQ_TIME = struct.Struct("!qd")
_RESULT_HEADER = struct.Struct("!qBd")
_LEN4 = struct.Struct("!i")
_LEN8 = struct.Struct("!Q")

RESULT_OK = 1
RESULT_ERROR = 0


# --------------------------------------------------------------------------
# Message builders


def frame(body: bytes | bytearray) -> bytes:
    """Prefix ``body`` with ``Connection``'s length header."""
    n = len(body)
    if n > 0x7FFFFFFF:
        return _LEN4.pack(-1) + _LEN8.pack(n) + bytes(body)
    return _LEN4.pack(n) + bytes(body)


def encode_jobs(jobs: list[tuple[int, int, bytes]]) -> bytes:
    """One JOBS message for ``[(seq, flags, payload), ...]``."""
    parts = [bytes((JOBS,)), _COUNT.pack(len(jobs))]
    parts.extend(_JOB_HEADER.pack(seq, flags, len(payload)) for seq, flags, payload in jobs)
    parts.extend(payload for _, _, payload in jobs)
    return b"".join(parts)


def decode_jobs(body: bytes) -> list[tuple[int, int, memoryview]]:
    (count,) = _COUNT.unpack_from(body, 1)
    headers = [
        _JOB_HEADER.unpack_from(body, 5 + i * _JOB_HEADER.size) for i in range(count)
    ]
    offset = 5 + count * _JOB_HEADER.size
    view = memoryview(body)
    jobs = []
    for seq, flags, size in headers:
        jobs.append((seq, flags, view[offset : offset + size]))
        offset += size
    return jobs


STOP_MESSAGE = bytes((STOP,))
QUIT_MESSAGE = bytes((QUIT,))
READY_MESSAGE = bytes((READY,))


def encode_accepted(seq: int, when: float) -> bytes:
    return bytes((ACCEPTED,)) + _SEQ_TIME.pack(seq, when)


def encode_result(seq: int, ok: int, duration: float, payload: bytes) -> bytes:
    return bytes((RESULT,)) + _RESULT_HEADER.pack(seq, ok, duration) + payload


def decode_result(body: bytes) -> tuple[int, int, float, memoryview]:
    seq, ok, duration = _RESULT_HEADER.unpack_from(body, 1)
    return seq, ok, duration, memoryview(body)[1 + _RESULT_HEADER.size :]


def decode_accepted(body: bytes) -> tuple[int, float]:
    return _SEQ_TIME.unpack_from(body, 1)


# --------------------------------------------------------------------------
# Parent side: non-blocking frame reader and writer over a raw fd


class FrameReader:
    """Reassembles frames from a non-blocking fd; never blocks."""

    __slots__ = ("fd", "_buf")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def read(self, drain: bool = False) -> tuple[list[bytes], bool]:
        """Read what is available; return (complete frames, eof).

        With ``drain``, keep reading until the pipe is empty or closed (used
        once the writer is dead, so that nothing it wrote is left unread).
        """
        frames: list[bytes] = []
        eof = False
        buf = self._buf
        while True:
            want = max(1 << 16, self._missing())
            try:
                chunk = os.read(self.fd, min(want, 1 << 24))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ECONNRESET and friends: the peer is gone
                eof = True
                break
            if not chunk:
                eof = True
                break
            buf += chunk
            self._parse(frames)
            if len(chunk) < want and not drain:
                break
        return frames, eof

    def _missing(self) -> int:
        buf = self._buf
        if len(buf) < 4:
            return 0
        (n,) = _LEN4.unpack_from(buf, 0)
        if n == -1:
            if len(buf) < 12:
                return 0
            (n,) = _LEN8.unpack_from(buf, 4)
            return n + 12 - len(buf)
        return n + 4 - len(buf)

    def _parse(self, frames: list[bytes]) -> None:
        buf = self._buf
        while len(buf) >= 4:
            (n,) = _LEN4.unpack_from(buf, 0)
            start = 4
            if n == -1:
                if len(buf) < 12:
                    return
                (n,) = _LEN8.unpack_from(buf, 4)
                start = 12
            end = start + n
            if len(buf) < end:
                return
            frames.append(bytes(buf[start:end]))
            del buf[:end]


class FrameWriter:
    """Buffers outgoing frames for a non-blocking fd."""

    __slots__ = ("fd", "_buf")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def push(self, body: bytes) -> None:
        self._buf += frame(body)

    def flush(self) -> bool:
        """Write as much as possible; return True when everything was sent.

        Raises OSError (EPIPE) when the reader is gone.
        """
        buf = self._buf
        while buf:
            try:
                with memoryview(buf) as view:
                    n = os.write(self.fd, view[: 1 << 22])
            except (BlockingIOError, InterruptedError):
                return False
            del buf[:n]
        return True

    def clear(self) -> None:
        self._buf.clear()
