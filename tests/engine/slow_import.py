"""A module whose import blocks in the test's process until released (see
test_fork_while_another_thread_imports)."""

import os

from tests.engine import helpers

if os.getpid() == helpers.IMPORT_GATE_PID:
    helpers.IMPORT_STARTED.set()
    helpers.IMPORT_GATE.wait(60)

VALUE = "imported"
