"""Tasks for the WorQ quick start, with poolx imports (see main.py).

WorQ's original starts with ``from worq import get_broker, TaskSpace``;
changing that import is the whole migration.
"""

import logging

from poolx import TaskSpace, get_broker

ts = TaskSpace(__name__)


def init(url):
    """Create a broker for ``url`` and expose this module's tasks on it."""
    logging.basicConfig(level=logging.INFO)
    broker = get_broker(url)
    broker.expose(ts)
    return broker


@ts.task
def num(value):
    return int(value)


@ts.task
def add(values):
    return sum(values)
