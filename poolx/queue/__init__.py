"""Task-queue storage backends, one module per URL scheme.

* :mod:`poolx.queue.base` — :class:`~poolx.queue.base.AbstractTaskQueue`,
  the storage contract every backend implements.
* :mod:`poolx.queue.registry` — which backend serves which URL scheme
  (extensible through the ``poolx.queues`` entry-point group).
* :mod:`poolx.queue.memory` — ``memory://``, the embedded in-process backend.

Backends are imported on first use, so importing this package costs nothing.
"""
