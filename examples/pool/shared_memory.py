"""Big arguments and results travel through shared memory, small ones through the pipe.

Run: python examples/pool/shared_memory.py
"""

from __future__ import annotations

import os

import poolx


def segments_seen(data: bytes, prefix: str) -> int:
    """How many of the pool's shared-memory segments exist while this job runs."""
    return sum(name.startswith(prefix) for name in os.listdir("/dev/shm"))


def blob(n: int) -> bytes:
    return b"\x01" * n


if __name__ == "__main__":
    prefix = f"poolx-{os.getpid()}-"  # every segment of this process's pools
    big = b"\x07" * (50 << 20)  # 50 MB: above the default 1 MiB threshold
    with poolx.Pool(2) as pool:
        print("1 KB argument, segments while it runs:", pool.apply(segments_seen, (big[:1024], prefix)))
        print("50 MB argument, segments while it runs:", pool.apply(segments_seen, (big, prefix)))
        print("50 MB result received:", len(pool.apply(blob, (50 << 20,))) == len(big))
    with poolx.Pool(2, shm_threshold=None) as pool:  # shared memory off: the pipe only
        print("shared memory off, segments while it runs:", pool.apply(segments_seen, (big, prefix)))
    print("segments left:", sum(name.startswith(prefix) for name in os.listdir("/dev/shm")))
