"""Late pickling: calls pickled after their submission, off the supervisor thread.

``apply_async`` pickles a call in the caller's thread while less than
:data:`~poolx.engine.supervisor.EAGER_BYTES` of pickled arguments wait to be
sent; beyond that, the job is submitted with its call unpickled
(:attr:`~poolx.engine.jobs.Job.call`), so that a burst of calls holds
references, not one pickle each.  Pickling runs user code (``__reduce__``,
``__getstate__``) that may be slow or block — on a lock its caller holds
while it waits for a result, say — so the supervisor thread, which owns all
pool state, never runs it: one pickler thread per pool does.  The standard
library pickles in its own task-handler thread for the same reason.

Data flow::

    supervisor thread                           pickler thread
    -----------------                           --------------
    drain: a job with its call unpickled,
      or any job behind one ──▶ lane (in order)
                      its call ──▶ todo ──────▶ waits while the bytes ahead of it
                                                (pickled, waiting to be sent) >= AHEAD_BYTES;
                                                pickles the call (user code)
    collect ◀── made + the supervisor's wake-up ◀┘
      the lane's head pickled: it and the pickled
      jobs behind it go to the dispatcher's queue;
      a pickle that raised fails its job
    dispatch sent bytes: wake the pickler if it waits for room

Who owns what: the :class:`LatePickler` belongs to the
:class:`~poolx.engine.supervisor.Supervisor`.  Its *lane* — the jobs from the
first one whose call waits to be pickled on, in submission order, so that
dispatch stays in submission order — is touched only by the supervisor
thread.  The *todo* (the jobs whose call to pickle, in order) and *made*
(the pickles made, or the exceptions pickling raised) are shared with the
pickler thread under one condition, which nobody holds while running user
code.  The pickler thread is started with the first late call and told to
stop with the pool; of a job, it only reads the call, which the supervisor
changes only when the job ends or once the thread made its pickle.  A
pickle that never returns blocks only that daemon thread: ``terminate()``
ends the lane's jobs without it, and whatever it makes afterwards is
released.  A forked child's copy of a pool never runs the pickler: only the
parent's supervisor thread starts it and hands it work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from poolx.engine.jobs import Job

AHEAD_BYTES = 1 << 20
"""The pickler makes pickles while less than this (or the pool's eager
window, if smaller) waits to be sent before the lane's head: enough for a
few dispatch rounds, so the workers never wait for it, and no more, so
that a burst of late calls holds about what the standard library holds
(it pickles as its pipe drains)."""

# A call, then what pickling it made: (job, payload, flags, exception).
Made = tuple[Job, bytes | None, int, BaseException | None]


class LatePickler:
    """The lane of jobs waiting for a late pickle, and the thread that makes it."""

    def __init__(
        self,
        dumps: Callable[..., tuple[bytes, int]],
        waiting_bytes: Callable[[], int],
        window: int,
        delivered: Callable[[int], None],
        release: Callable[[bytes | None], object],
    ) -> None:
        # dumps(*call) -> (payload, flags); waiting_bytes(): pickled arguments
        # waiting to be sent; delivered(size): a pickle of size bytes is in
        # made (the supervisor counts it and wakes up);
        # release(payload): a pickle nobody will send.
        self._dumps = dumps
        self._waiting_bytes = waiting_bytes
        self._window = min(window, AHEAD_BYTES)
        self._delivered = delivered
        self._release = release
        # Supervisor thread only.
        self.lane: deque[Job] = deque()
        self.behind_bytes = 0  # the waiting_bytes of the pickled jobs in the lane
        self._fresh = False  # jobs added to the todo since the thread was last told
        # Shared with the pickler thread, under _cond — but the supervisor
        # appends to the todo without it (a deque's appends and pops are
        # thread-safe; :meth:`hand_over` then wakes the thread under it).
        self._cond = threading.Condition(threading.Lock())
        self._todo: deque[Job] = deque()  # the jobs whose call to pickle (a job, not a copy of its call)
        self._made: deque[Made] = deque()
        self._stopped = False
        self.wants_room = False  # the thread waits for the bytes ahead of it to drop
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ supervisor thread

    def admit(self, job: Job) -> None:
        """Queue ``job`` in the lane: its call waits to be pickled, or a job
        before it does.  (Call :meth:`hand_over` after a batch.)"""
        self.lane.append(job)
        if job.call is not None:
            self._todo.append(job)
            self._fresh = True
        else:
            self.behind_bytes += job.waiting_bytes

    def hand_over(self) -> None:
        """Give the calls admitted since the last call to the pickler thread."""
        if not self._fresh:
            return
        self._fresh = False
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="poolx-pickler", daemon=True)
                self._thread.start()
            self._cond.notify()

    def has_room(self) -> bool:
        """Whether the pickled arguments that will be sent before the lane's
        head are below the window (or none: a window of 0 pickles one at a
        time)."""
        ahead = self._waiting_bytes() - self.behind_bytes
        return ahead < self._window or ahead <= 0

    def wake(self) -> None:
        """The bytes ahead dropped: let a thread waiting for room look again."""
        with self._cond:
            self._cond.notify()

    @property
    def has_made(self) -> bool:
        return bool(self._made)

    def collect(self, queue: deque[Job], fail: Callable[[Job, BaseException], None],
                drop: Callable[[bytes | None], None]) -> None:
        """Take the pickles made: the pickled jobs at the head of the lane go
        to ``queue``; ``fail(job, exc)`` a job whose pickle raised;
        ``drop(payload)`` a pickle whose job ended meanwhile (terminate)."""
        with self._cond:
            made = list(self._made)
            self._made.clear()
        lane = self.lane
        for job, data, flags, error in made:
            if job.state.terminal:
                drop(data)
                continue
            if lane[0] is not job:  # the lane's head is the next call pickled
                raise RuntimeError(f"poolx: late pickle of {job!r} out of order")
            if error is not None:
                lane.popleft()
                fail(job, error)
            else:
                assert data is not None
                job.call = None
                job.payload = data
                job.flags |= flags
                job.waiting_bytes = len(data)
                self.behind_bytes += job.waiting_bytes
            while lane and lane[0].call is None:
                job = lane.popleft()
                self.behind_bytes -= job.waiting_bytes
                queue.append(job)

    def take_all(self) -> list[Job]:
        """Empty the lane (the pool ends its jobs): the thread drops its todo."""
        jobs = list(self.lane)
        self.lane.clear()
        self.behind_bytes = 0
        self._fresh = False
        with self._cond:
            self._todo.clear()
        return jobs

    def stop(self) -> None:
        """The pool is finished: the thread exits (once a pickle it is
        making returns, if ever) and what it made is released."""
        with self._cond:
            self._stopped = True
            self._todo.clear()
            made = list(self._made)
            self._made.clear()
            self._cond.notify()
        for _job, data, _flags, _error in made:
            self._release(data)
        self.lane.clear()
        self._fresh = False

    # ------------------------------------------------------------------ pickler thread

    def _run(self) -> None:
        cond = self._cond
        todo = self._todo
        while True:
            with cond:
                while True:
                    if self._stopped:
                        return
                    if todo:
                        # Set before looking: the supervisor, which makes
                        # room, looks at it after (see Supervisor._run).
                        self.wants_room = True
                        if self.has_room():
                            break
                    else:
                        self.wants_room = False
                    cond.wait()
                self.wants_room = False
                job = todo.popleft()
                # Read once: the supervisor drops it when the job ends (it
                # changes it only then, or once this thread made its pickle).
                call = job.call
            if call is None:
                continue
            data: bytes | None = None
            flags = 0
            error: BaseException | None = None
            try:
                data, flags = self._dumps(*call)
            except BaseException as exc:  # SystemExit from a __reduce__ too: that job's error
                error = exc
            del call
            with cond:
                stopped = self._stopped
                if not stopped:
                    self._made.append((job, data, flags, error))
            if stopped:
                self._release(data)
                return
            self._delivered(len(data) if data is not None else 0)
