"""The CLI tests reuse the worker-pool fixtures (isolated memory:// URLs,
pools that always stop)."""

from tests.worker.conftest import start_pool, url  # noqa: F401
