"""Imported in the forkserver process of ``poolx worker`` (layer L7): the
forkserver, and so every worker it forks, ignores SIGTERM and SIGINT.

A SIGTERM sent to the whole process group (``kill -TERM -PGID``) or to the
whole control group (systemd's default ``KillMode``) reaches the forkserver
too; without this it dies, and the pool's process can no longer learn how
its workers end (multiprocessing reports exit code 255: a lost worker).  The
pool's process alone decides: it stops gracefully on SIGTERM and kills its
workers with SIGKILL when it must.  Only ``poolx worker`` sets this preload:
in another program the forkserver is shared with its own processes, whose
``terminate()`` must keep working.

SIGINT (a terminal's CTRL+C goes to the whole foreground group) is ignored
here too, not only by the workers' initializer: the forkserver hands its own
handlers to each child it forks, so a worker still starting up when CTRL+C
comes (before its initializer ran) would otherwise die of
``KeyboardInterrupt``.  The engine's worker then installs its own SIGINT
handler (a no-op outside a job) and the initializer ignores it again.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
