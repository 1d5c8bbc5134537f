"""Visible operation: what users cannot see is logged under ``convstore``, never printed.

Leaked sessions warning by name are tested in ``test_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from eventstore import OperationalError, TransientError
from eventstore.backends.sqlite import ThreadRunner
from sessions import SQLiteSession

from ..conftest import Backend
from .conftest import open_session


async def test_transient_retries_are_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.add_items([{"n": 1}])
    runner = session.store._runner
    real_run = runner.run
    failures = [TransientError("database is locked (simulated)")]

    async def flaky(fn: Any, *, write: bool, quick: bool = False) -> Any:
        if failures:
            raise failures.pop()
        return await real_run(fn, write=write, quick=quick)

    runner.run = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="convstore"):
        await session.add_items([{"n": 2}])
    await session.close()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1
    assert retries[0].name == "convstore.eventstore"
    assert retries[0].levelno == logging.DEBUG
    assert "simulated" in retries[0].getMessage()


async def test_slow_transactions_are_logged_at_debug(
    backend: Backend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eventstore.transactions.SLOW_SECONDS", 0.0)  # every transaction is "slow"
    async with open_session(backend.name, backend.target, "s") as session:
        with caplog.at_level(logging.DEBUG, logger="convstore"):
            await session.add_items([{"n": 1}])
    slow = [r for r in caplog.records if r.getMessage().startswith("slow write transaction")]
    assert slow
    assert {r.levelno for r in slow} == {logging.DEBUG}


async def test_a_failed_group_commit_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = SQLiteSession("s", tmp_path / "g.db")
    await session.add_items([{"n": 0}])
    runner = session.store._runner
    assert isinstance(runner, ThreadRunner)
    real_run = runner._run
    calls: list[int] = []

    def failing_commit(fn: Any, write: bool) -> Any:
        if write and calls:
            raise OperationalError("disk I/O error (simulated)")
        calls.append(1)
        return real_run(fn, write)

    gate = asyncio.Event()
    holding = threading.Event()

    def hold_worker() -> None:  # keeps the worker busy so that the writes queue up
        holding.set()
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()

    loop = asyncio.get_running_loop()
    held = loop.run_in_executor(runner._executor, hold_worker)
    # The worker may still be finishing the first write: wait until it is held.
    await asyncio.to_thread(holding.wait)
    runner._run = failing_commit  # type: ignore[method-assign]
    calls.append(1)  # from now on, a write transaction fails
    # Three sessions on the store (one session's adds that queue up would be written
    # together, as one write: eventstore/coalesce.py).
    others = [SQLiteSession(f"s{n}", tmp_path / "g.db") for n in (1, 2)]
    with caplog.at_level(logging.DEBUG, logger="convstore"):
        writes = [
            asyncio.ensure_future(s.add_items([{"n": n}]))
            for n, s in enumerate([session, *others], start=1)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await held
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
    runner._run = real_run  # type: ignore[method-assign]
    try:
        assert all(isinstance(o, OperationalError) for o in outcomes), outcomes
        failed = [r for r in caplog.records if "writes failed" in r.getMessage()]
        assert failed, "a group commit (of the writes that queued up) failed, and said so"
        assert {r.name for r in failed} == {"convstore.sqlite"}
        assert await session.get_items() == [{"n": 0}], "no write of a failed group committed"
        assert [await s.get_items() for s in others] == [[], []]
    finally:
        for s in others:
            await s.close()
        await session.close()


def test_nothing_is_printed_without_logging_configuration() -> None:
    code = (
        "import logging, eventstore\n"
        "logging.getLogger('convstore.eventstore').warning('giving up after 12 attempts')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == ""
    assert done.stderr == "", "Python's last-resort handler printed a library log record"
