"""Property test: random dependency graphs of Deferred arguments.

Every node's value must equal a reference computed locally, and a failing
node must propagate exactly as its dependents' ``on_error`` says: with
``Task.FAIL`` a dependent fails with the first failed argument's
TaskFailure (unchanged, so failures travel down the graph); with
``Task.PASS`` it receives the TaskFailure as a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from poolx import Task, TaskFailure, get_broker, get_queue

from .helpers import WAIT, thread_worker, value_of

FAILED_ARG = 1000  # what a TaskFailure passed as an argument adds to a sum


@dataclass(frozen=True)
class Node:
    deps: tuple[int, ...]
    fails: bool
    on_error: str


@st.composite
def graphs(draw) -> list[Node]:
    size = draw(st.integers(min_value=1, max_value=12))
    nodes = []
    for i in range(size):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=4)) if i else []
        nodes.append(
            Node(
                deps=tuple(deps),
                fails=draw(st.booleans()),
                on_error=draw(st.sampled_from([Task.FAIL, Task.PASS])),
            )
        )
    return nodes


def node(i, fails, inputs):
    """The task at every node: i + the sum of its inputs."""
    if fails:
        raise ValueError(f"node {i}")
    values = inputs["deps"]
    return i + sum(FAILED_ARG if isinstance(v, TaskFailure) else v for v in values)


def reference(nodes: list[Node]) -> list[tuple[str, int]]:
    """('ok', value) or ('fail', index of the node whose failure it carries)."""
    out: list[tuple[str, int]] = []
    for i, n in enumerate(nodes):
        inputs = [out[d] for d in n.deps]
        failed = [origin for kind, origin in inputs if kind == "fail"]
        if failed and n.on_error == Task.FAIL:
            out.append(("fail", failed[0]))
        elif n.fails:
            out.append(("fail", i))
        else:
            out.append(("ok", i + sum(FAILED_ARG if k == "fail" else v for k, v in inputs)))
    return out


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(nodes=graphs(), workers=st.integers(1, 3))
@example(  # two failed arguments: the first one's failure wins
    nodes=[Node((), True, Task.FAIL), Node((), True, Task.FAIL), Node((0, 1), False, Task.FAIL)],
    workers=1,
)
@example(  # a failure passed on, then failing further down
    nodes=[
        Node((), True, Task.FAIL),
        Node((0, 0), False, Task.PASS),
        Node((1, 0), False, Task.FAIL),
    ],
    workers=2,
)
def test_random_dependency_graphs(url, nodes, workers):
    broker = get_broker(url)
    broker.expose(node, replace=True)
    with thread_worker(broker, workers=workers):
        q = get_queue(url)
        results = []
        for i, n in enumerate(nodes):
            task = Task(q.node, on_error=n.on_error)
            # Deferreds nested inside a dict and a list: values are passed.
            results.append(task(i, n.fails, {"deps": [results[d] for d in n.deps]}))
        expected = reference(nodes)
        for i, res in enumerate(results):
            assert res.wait(WAIT), repr(res)
            kind, value = expected[i]
            if kind == "ok":
                assert res.status == "success", (i, res)
                assert res.value == value
            else:
                origin = results[value]
                failure = TaskFailure("node", "default", origin.id, f"ValueError: node {value}")
                assert res.status == "failed", (i, res)
                try:
                    value_of(res)
                except TaskFailure as err:
                    assert err == failure
                else:
                    raise AssertionError(f"node {i} should have failed with {failure}")
