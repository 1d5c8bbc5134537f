"""Running a check in a child process made by os.fork() (what a pre-forking server or
multiprocessing's ``fork`` start method does)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable

import pytest

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no os.fork() here"
)
# (Python 3.12 warns of any fork in a process with threads: the point of these tests.)
forking = pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")


def in_forked_child(check: Callable[[], Awaitable[None]]) -> None:
    """Run ``check`` in a child made by os.fork(); fail unless it passes. A child stuck
    on something inherited (a lock, a thread that did not survive the fork) is killed
    and fails the test."""

    def child() -> None:
        asyncio.run(check())

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(120)  # a bound on a hang, not a measure of speed
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail("the forked child hung")
    assert process.exitcode == 0, "the forked child failed (its traceback is above)"
