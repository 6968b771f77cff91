"""Pool fixtures: the core pool tests run under every start method."""

from __future__ import annotations

import multiprocessing

import pytest

import poolx

START_METHODS = ["fork", "forkserver", "spawn"]


@pytest.fixture(params=START_METHODS)
def ctx(request: pytest.FixtureRequest) -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(request.param)


@pytest.fixture
def fork_ctx() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("fork")


@pytest.fixture
def pool(ctx):
    p = poolx.Pool(2, context=ctx)
    yield p
    p.terminate()
    p.join()
