"""Framing and codecs on a worker's pipe, without processes."""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
from multiprocessing.connection import Connection

import pytest

from poolx.engine import wire


@pytest.fixture
def pair():
    """(parent fd, non-blocking; child Connection) over a socketpair, like the pool's."""
    parent, child = socket.socketpair()
    parent_fd, child_fd = parent.detach(), child.detach()
    os.set_blocking(parent_fd, False)
    conn = Connection(child_fd)
    yield parent_fd, conn
    conn.close()
    try:
        os.close(parent_fd)
    except OSError:
        pass


def test_job_message_round_trip():
    jobs = [(1, 0, b"abc"), (2**40, wire.FLAG_ACK, b""), (3, 0, b"x" * 1000)]
    body = wire.encode_jobs(jobs)
    assert body[0] == wire.JOBS
    decoded = wire.decode_jobs(body)
    assert [(seq, flags, bytes(payload)) for seq, flags, payload in decoded] == jobs
    assert wire.decode_jobs(wire.encode_jobs([])) == []


def test_result_and_accepted_round_trip():
    body = wire.encode_result(7, wire.RESULT_ERROR, 0.25, b"payload")
    assert body[0] == wire.RESULT
    seq, ok, duration, payload = wire.decode_result(body)
    assert (seq, ok, duration, bytes(payload)) == (7, wire.RESULT_ERROR, 0.25, b"payload")
    body = wire.encode_accepted(9, 12.5)
    assert body[0] == wire.ACCEPTED
    assert wire.decode_accepted(body) == (9, 12.5)


def test_frames_written_by_the_parent_are_read_by_a_connection(pair):
    parent_fd, conn = pair
    writer = wire.FrameWriter(parent_fd)
    bodies = [wire.STOP_MESSAGE, b"", wire.encode_jobs([(1, 0, b"p" * 5000)])]
    for body in bodies:
        writer.push(body)
    assert writer.flush()
    assert [conn.recv_bytes() for _ in bodies] == bodies


def test_frames_sent_by_a_connection_are_read_by_the_parent(pair):
    parent_fd, conn = pair
    reader = wire.FrameReader(parent_fd)
    assert reader.read() == ([], False)  # nothing yet: never blocks
    bodies = [wire.READY_MESSAGE, wire.encode_result(1, 1, 0.0, b"r" * 100_000), b"\x00"]
    for body in bodies:
        conn.send_bytes(body)
    conn.close()
    frames, eof = reader.read(drain=True)
    assert frames == bodies
    assert eof


def test_a_frame_split_across_reads_is_reassembled():
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = wire.FrameReader(r)
    data = wire.frame(b"hello") + wire.frame(b"world")
    seen = []
    for i in range(len(data)):
        os.write(w, data[i : i + 1])
        frames, eof = reader.read()
        assert not eof
        seen.extend(frames)
        if i < len(wire.frame(b"hello")) - 1:
            assert seen == []  # nothing before the first frame is complete
    assert seen == [b"hello", b"world"]
    os.close(w)
    assert reader.read() == ([], True)
    os.close(r)


def test_the_long_length_header_is_understood():
    # Connection uses -1 followed by an 8-byte length for frames over 2 GiB;
    # the parser accepts it for any size.
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = wire.FrameReader(r)
    os.write(w, struct.pack("!i", -1) + struct.pack("!Q", 3) + b"abc" + wire.frame(b"next"))
    assert reader.read() == ([b"abc", b"next"], False)
    os.close(w)
    os.close(r)


def test_a_frame_cut_off_by_a_dying_writer_is_not_delivered():
    r, w = os.pipe()
    os.set_blocking(r, False)
    reader = wire.FrameReader(r)
    os.write(w, wire.frame(b"complete") + wire.frame(b"cut off")[:6])
    os.close(w)
    assert reader.read(drain=True) == ([b"complete"], True)
    os.close(r)


def test_writer_buffers_what_a_full_pipe_cannot_take(pair):
    parent_fd, conn = pair
    writer = wire.FrameWriter(parent_fd)
    big = b"z" * (8 << 20)  # far more than a socket buffer
    writer.push(big)
    assert writer.flush() is False  # the rest waits in the buffer; no blocking
    received = []
    reader = threading.Thread(target=lambda: received.append(conn.recv_bytes()))
    reader.start()
    with selectors.DefaultSelector() as sel:
        sel.register(parent_fd, selectors.EVENT_WRITE)
        while not writer.flush():
            assert sel.select(10), "the pipe never drained"
    reader.join(10)
    assert received == [big]


def test_writer_raises_when_the_reader_is_gone(pair):
    parent_fd, conn = pair
    conn.close()
    writer = wire.FrameWriter(parent_fd)
    writer.push(b"x" * (1 << 20))
    with pytest.raises(OSError):
        writer.flush()
    writer.clear()
    assert writer.flush()  # nothing left to write
