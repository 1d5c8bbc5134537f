"""The options of pooled and replicated stores, refused when they cannot work, and the
bookkeeping of read-your-writes (no server needed: nothing here connects)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    ArgumentTypeError,
    ConfigurationError,
    ConnectionLostError,
    EventStore,
    InvalidArgumentError,
    ReadReplica,
)
from eventstore import replica as replica_module
from eventstore.backends import open_runner
from eventstore.replica import ReplicaReads
from sessions import SQLAlchemySession

NOWHERE = "postgresql://app@127.0.0.1:9/app"  # never connected to


class _Captured(Exception):
    """Stops a connection attempt once its arguments are known."""


async def test_the_pooler_option_sets_up_the_engine_and_leaves_the_driver_alone() -> None:
    runner = open_runner(f"{NOWHERE}?pooler=transaction&application_name=x")
    found: dict[str, Any] = {}

    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        found.update(cparams)
        raise _Captured

    event.listen(runner.engine.sync_engine, "do_connect", capture)
    try:
        assert runner.pooler == "transaction"
        with pytest.raises(_Captured):
            async with runner.engine.connect():
                pass
    finally:
        await runner.close()
    assert "pooler" not in found  # convstore's own option never reaches asyncpg
    assert found["application_name"] == "x"  # the other options still do
    assert found["statement_cache_size"] == 0
    assert found["prepared_statement_cache_size"] == 0
    plain = EventStore(NOWHERE)
    assert plain.pooler is None
    await plain.close()


@pytest.mark.parametrize(
    ("target", "kwargs", "says"),
    [
        (f"{NOWHERE}?pooler=statement", {}, "statement mode cannot"),
        (f"{NOWHERE}?pooler=session", {}, "no option needed"),
        ("sqlite:///x.db?pooler=transaction", {}, "remove it from the URL"),
        ("mysql://root@127.0.0.1:9/x?pooler=transaction", {}, "remove it from the URL"),
        (
            f"{NOWHERE}?pooler=transaction",
            {"engine_kwargs": {"connect_args": {"statement_cache_size": 100}}},
            "cannot work behind a transaction pooler",
        ),
    ],
)
def test_a_pooler_option_that_cannot_work_is_refused(
    target: str, kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says):
        EventStore(target, **kwargs)


def test_a_read_replica_that_cannot_work_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="supported on PostgreSQL"):
        EventStore(str(tmp_path / "x.db"), read_replica=NOWHERE)
    with pytest.raises(ConfigurationError, match="supported on PostgreSQL"):
        EventStore(NOWHERE, read_replica=str(tmp_path / "x.db"))
    with pytest.raises(ArgumentTypeError):
        ReadReplica(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        ReadReplica(NOWHERE, max_wait=-1)
    with pytest.raises(ArgumentTypeError):
        ReadReplica(NOWHERE, retry_after="5")  # type: ignore[arg-type]


class Primary:
    """Stands in for the store's reads on the primary: WAL positions 100, 200, …"""

    def __init__(self) -> None:
        self.asked = 0
        self._positions = itertools.count(100, 100)

    async def __call__(self, fn: Any) -> Any:
        self.asked += 1
        return next(self._positions)


async def test_the_marks_of_writes() -> None:
    """What a read waits for: nothing for a stream this process did not write; the
    primary's position read once after its writes ended; the primary itself while one
    is in flight; nothing once the standby was seen to have it."""
    primary_runner = open_runner(NOWHERE)
    reads = ReplicaReads(ReadReplica(NOWHERE), primary_runner)
    primary = Primary()
    try:
        assert await reads._target("never-written", primary) is None
        reads.started("s")
        assert await reads._target("s", primary) is replica_module._PRIMARY
        reads.ended("s")
        assert await reads._target("s", primary) == 100
        assert await reads._target("s", primary) == 100
        assert primary.asked == 1
        reads.started("s")
        reads.ended("s")
        assert await reads._target("s", primary) == 200
        reads._confirmed("s", 200)
        assert await reads._target("s", primary) is None
    finally:
        await reads.close()
        await primary_runner.close()


async def test_forgotten_marks_leave_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the most streams remembered, the oldest marks are forgotten into one
    position that reads of unmarked streams wait for: never a read without a wait
    that a forgotten write needed."""
    monkeypatch.setattr(replica_module, "_MARKED_STREAMS", 2)
    primary_runner = open_runner(NOWHERE)
    reads = ReplicaReads(ReadReplica(NOWHERE), primary_runner)
    primary = Primary()
    try:
        for name in ("a", "b", "c"):  # "a" is forgotten before its target was read
            reads.started(name)
            reads.ended(name)
        assert await reads._target("a", primary) == 100  # the floor, read now
        assert await reads._target("other", primary) == 100
        assert primary.asked == 1
        reads._confirmed("other", 100)
        assert await reads._target("other", primary) is None
    finally:
        await reads.close()
        await primary_runner.close()


async def test_a_database_never_reached_is_reported_at_once() -> None:
    """A refused connection before this process ever reached the database is most
    likely a wrong address: one attempt, not ten seconds of retries (those are for a
    server restarting under a running application, tests/production/test_restarts.py)."""
    store = EventStore(NOWHERE)
    runner: Any = store._runner
    attempts = 0
    run = runner.run

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return await run(*args, **kwargs)

    runner.run = counted
    try:
        with pytest.raises(ConnectionLostError, match="cannot connect") as raised:
            await store.ensure_tables()
    finally:
        await store.close()
    assert attempts == 1
    assert not raised.value.outcome_unknown


def test_a_read_engine_of_the_wrong_kind_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="read_engine must be"):
        SQLAlchemySession("s", db_url=NOWHERE, read_engine=NOWHERE)  # type: ignore[arg-type]
    engine = create_async_engine(NOWHERE.replace("postgresql://", "postgresql+asyncpg://"))
    with pytest.raises(ConfigurationError, match="supported on PostgreSQL"):
        SQLAlchemySession("s", db_url=f"sqlite:///{tmp_path / 'x.db'}", read_engine=engine)
