"""A cancelled mutation has a definite outcome, and the natural retry is safe.

Calls are cancelled at random points (before the write is queued, while it waits for
the worker or the server, while it commits, after it finished). For every cancelled
call the caller can tell what happened: a plain ``CancelledError`` means nothing was
written, :class:`CancelledAfterCommit` that it was (``result`` holds a popped item).
A retried ``add_items`` of the same items never duplicates them, and no ``pop_item``
removes an item that no caller received.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventstore import (
    CancelledAfterCommit,
    Event,
    EventStore,
    ItemPopped,
    ItemsAdded,
    PersistenceError,
    SessionCleared,
)
from projections.history_reads import WHOLE_SLICED
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    EncryptedSession,
    StoreSession,
    release_sqlite_files,
)

from ..conftest import Backend, reset_server_database
from .conftest import open_session

ROUNDS = 40
LONG = WHOLE_SLICED + 44  # items of the read that is cancelled


TIMED_CALLS = 8  # calls typical_seconds makes


async def typical_seconds(call: Callable[[], Awaitable[Any]]) -> float:
    """How long one call takes here (the median of 7, after one that warms up; a slow
    first call would push every cancellation past the end of the call):
    cancellations are spread over about twice that."""
    await call()
    times = []
    for _ in range(TIMED_CALLS - 1):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def cancel_at_random(
    call: Awaitable[Any], rng: random.Random, within: float
) -> tuple[str, Any]:
    """Run ``call`` in a task and cancel it after a random delay: what came of it."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(rng.uniform(0, within))
    task.cancel()
    try:
        return "finished", await task
    except CancelledAfterCommit as cancelled:
        return "committed", cancelled.result
    except asyncio.CancelledError:
        return "not written", None


def outcomes_to_see(backend: Backend) -> set[str]:
    """The outcomes a lone caller's cancelled write must show, each at least once.

    On SQLite the write waits for the connection's worker thread, and a caller
    cancelled before the worker takes it withdraws it (plain CancelledError). On
    PostgreSQL and MariaDB the write is on its way by the end of the call's first step,
    and a cancelled caller waits for its outcome: it is told "not written" only if the
    write failed, which these tests do not make happen.
    """
    if backend.name.startswith("sqlite"):
        return {"finished", "committed", "not written"}
    return {"finished", "committed"}


# A round in ten cancels at the first turn of the event loop (delay 0): the write has
# just been handed over, the earliest point a random delay rarely hits.
EARLY = 10


@pytest.fixture
async def session(shared_backend: Backend) -> Any:
    made = open_session(shared_backend.name, shared_backend.target, "s")
    yield made
    await made.close()


async def test_cancelled_adds_are_told_apart_and_retries_never_duplicate(
    session: StoreSession, shared_backend: Backend
) -> None:
    rng = random.Random(20261127)
    within = 2 * await typical_seconds(lambda: session.add_items([{"warm": 1}]))
    expected = [{"warm": 1}] * TIMED_CALLS
    seen: Counter[str] = Counter()
    required = outcomes_to_see(shared_backend)
    for i in range(20 * ROUNDS):  # ROUNDS, then on until every outcome has occurred
        if i >= ROUNDS and required <= set(seen):
            break
        item = {"i": i}
        delay = 0 if i % EARLY == 0 else within
        outcome, _ = await cancel_at_random(session.add_items([item]), rng, delay)
        seen[outcome] += 1
        newest = await session.get_items(limit=1)
        if outcome == "not written":
            assert newest != [item], f"round {i}: a plain CancelledError, yet it was written"
        else:
            assert newest == [item], f"round {i}: {outcome} but not in the history"
        if outcome != "finished":
            await session.add_items([item])  # the caller's natural retry
        expected.append(item)
        assert await session.get_items(limit=2) == expected[-2:], f"round {i}"
    assert await session.get_items() == expected, "no item lost or duplicated"
    assert required <= set(seen), f"an outcome never occurred: {seen}"


async def test_timed_out_adds_retried_in_a_loop_land_once(session: StoreSession) -> None:
    """The pattern users write: ``asyncio.wait_for`` with a timeout, retried until done."""
    rng = random.Random(7)
    within = 2 * await typical_seconds(lambda: session.add_items([{"warm": 1}]))
    timeouts = 0

    async def add_until_done(items: list[Any], first_within: float | None) -> None:
        nonlocal timeouts
        limit = first_within
        while True:
            try:
                await asyncio.wait_for(
                    session.add_items(items), rng.uniform(0, within) if limit is None else limit
                )
                return
            except TimeoutError:
                timeouts += 1
            limit = None

    batches = [[{"b": b, "k": k} for k in range(b % 3 + 1)] for b in range(ROUNDS)]
    for n, batch in enumerate(batches):
        # Every tenth batch first gets a timeout shorter than any add, so that some
        # timeouts happen however fast the machine is today; the rest are random.
        await add_until_done(batch, within / 100 if n % 10 == 0 else None)
    expected = [{"warm": 1}] * TIMED_CALLS + [item for batch in batches for item in batch]
    assert await session.get_items() == expected
    assert timeouts > 0


async def test_retry_of_an_add_cancelled_in_a_group_is_a_no_op(session: StoreSession) -> None:
    """Adds arriving while one is written are written together. One of such a group is
    cancelled while the group commits (CancelledAfterCommit); its retry then arrives
    with other adds and is written with them: it is a no-op, and they are written."""
    await session.add_items([{"warm": 1}])
    tasks = [asyncio.ensure_future(session.add_items([{"n": n}])) for n in range(3)]
    await asyncio.sleep(0)  # 0 is being written, 1 and 2 wait for it
    await tasks[0]  # its end starts writing 1 and 2 together
    tasks[1].cancel()
    with pytest.raises(CancelledAfterCommit):
        await tasks[1]
    await tasks[2]
    again = [
        session.add_items([{"x": 0}]),
        session.add_items([{"n": 1}]),  # the natural retry
        session.add_items([{"x": 1}]),
    ]
    await asyncio.gather(*again)
    expected = [{"warm": 1}, {"n": 0}, {"n": 1}, {"n": 2}, {"x": 0}, {"x": 1}]
    assert await session.get_items() == expected


async def test_tasks_cancelled_at_random_while_adding_at_once_lose_nothing(
    session: StoreSession,
) -> None:
    """Eight tasks add at once (so their adds are written in groups), each call under a
    random timeout and retried until it is done: every item lands once, in its task's
    order."""
    rng = random.Random(13)
    within = 2 * await typical_seconds(lambda: session.add_items([{"warm": 1}]))
    timeouts = 0

    async def writer(w: int) -> None:
        nonlocal timeouts
        for n in range(ROUNDS // 2):
            while True:
                try:
                    await asyncio.wait_for(
                        session.add_items([{"w": w, "n": n}]), rng.uniform(0, 4 * within)
                    )
                    break
                except TimeoutError:
                    timeouts += 1

    await asyncio.gather(*(writer(w) for w in range(8)))
    items = await session.get_items()
    assert items[:TIMED_CALLS] == [{"warm": 1}] * TIMED_CALLS
    added = items[TIMED_CALLS:]
    assert len(added) == 8 * (ROUNDS // 2), "an item was lost or duplicated"
    for w in range(8):
        assert [i["n"] for i in added if i["w"] == w] == list(range(ROUNDS // 2)), f"task {w}"
    assert timeouts > 0


async def test_no_cancelled_pop_removes_an_item_nobody_received(
    session: StoreSession, shared_backend: Backend
) -> None:
    rng = random.Random(11)
    items = [{"n": n} for n in range(ROUNDS)]
    await session.add_items(items)
    within = 2 * await typical_seconds(lambda: session.get_items(limit=1))
    received: list[Any] = []
    seen: Counter[str] = Counter()
    expected = items[::-1]
    required = outcomes_to_see(shared_backend)
    while len(received) < len(expected) or (
        not required <= set(seen) and len(expected) < 20 * ROUNDS
    ):
        if len(received) == len(expected):  # an outcome has not occurred yet: pop more
            items = [{"n": n} for n in range(len(expected), len(expected) + ROUNDS)]
            await session.add_items(items)
            expected += items[::-1]
        before = await session.get_items(limit=1)
        delay = 0 if sum(seen.values()) % EARLY == 0 else within * 2
        outcome, value = await cancel_at_random(session.pop_item(), rng, delay)
        seen[outcome] += 1
        if outcome == "not written":
            assert await session.get_items(limit=1) == before, "removed, but not said"
            continue
        assert value is not None
        received.append(value)  # the caller got it: from the call or from the error
        if outcome == "committed":
            # The retry of the cancelled pop hands out the same item, removing nothing.
            assert await session.pop_item() == value
    assert received == expected, "every item received once, newest first"
    assert await session.get_items() == []
    assert required <= set(seen), f"an outcome never occurred: {seen}"


async def test_timed_out_pops_retried_in_a_loop_lose_nothing(session: StoreSession) -> None:
    rng = random.Random(3)
    items = [{"n": n} for n in range(ROUNDS)]
    await session.add_items(items)
    within = 2 * await typical_seconds(lambda: session.get_items(limit=1))
    received = []
    timeouts = 0
    for n, _ in enumerate(items):
        # Every tenth pop first gets a timeout shorter than any pop, so that some
        # timeouts happen however fast the machine is today; the rest are random.
        limit: float | None = within / 100 if n % 10 == 0 else None
        while True:
            try:
                received.append(
                    await asyncio.wait_for(
                        session.pop_item(), rng.uniform(0, within * 4) if limit is None else limit
                    )
                )
                break
            except TimeoutError:
                timeouts += 1
            limit = None
    assert received == items[::-1]
    assert await session.get_items() == []
    assert timeouts > 0


async def test_cancelled_clear_either_cleared_or_did_nothing(
    session: StoreSession, shared_backend: Backend
) -> None:
    rng = random.Random(5)
    within = 2 * await typical_seconds(lambda: session.get_items(limit=1))
    seen: Counter[str] = Counter()
    required = outcomes_to_see(shared_backend)
    for i in range(20 * ROUNDS):  # ROUNDS // 2, then on until every outcome has occurred
        if i >= ROUNDS // 2 and required <= set(seen):
            break
        await session.add_items([{"i": i}])
        delay = 0 if i % EARLY == 0 else within * 2
        outcome, _ = await cancel_at_random(session.clear_session(), rng, delay)
        seen[outcome] += 1
        left = await session.get_items()
        assert (left == []) == (outcome != "not written"), f"round {i}: {outcome}, {left}"
        if i >= ROUNDS // 2 and "finished" not in seen:
            # A clear takes longer than the read timed above, the more so on a busy
            # server: widen the spread until some clears end before their cancellation.
            within *= 1.1
    assert required <= set(seen), f"an outcome never occurred: {seen}"


async def test_cancelled_reads_raise_cancelled_error(session: StoreSession) -> None:
    """Never a driver error in its place (asyncmy said 'Cancelled during execution')."""
    rng = random.Random(9)
    # More items than a whole read of a short history takes on the caller's thread
    # (WHOLE_SLICED, with nothing to cancel it at): the read awaits the worker.
    await session.add_items([{"n": n} for n in range(LONG)])
    within = 2 * await typical_seconds(lambda: session.get_items())
    seen: Counter[str] = Counter()
    for i in range(20 * ROUNDS):  # ROUNDS, then on until both outcomes have occurred
        if i >= ROUNDS and len(seen) == 2:
            break
        try:
            outcome, _ = await cancel_at_random(session.get_items(), rng, within)
        except PersistenceError as error:  # pragma: no cover - the failure this prevents
            pytest.fail(f"a cancelled read raised {error!r}")
        assert outcome in ("finished", "not written")
        seen[outcome] += 1
    assert len(seen) == 2, f"an outcome never occurred: {seen}"
    assert len(await session.get_items()) == LONG


# -- cancelled at every await point of a first use -----------------------------------------
#
# A session's first call on a database the process has not opened does more than its own
# write: the store first prepares the tables (a committed write of its own), catches up
# projections and reads the database's settings. Random delays rarely land on every one
# of those awaits, so these tests enumerate them: the call is run once per suspension k,
# on a database it meets for the first time, and cancelled at its k-th suspension, until
# a k beyond its last. Each outcome is then checked against the log.


class CancelAtSuspension:
    """Awaits ``call`` and cancels the awaiting task at the call's ``k``-th suspension.

    A suspension is a point where the call yields to the event loop (an ``await`` that
    does not complete at once). ``when="suspending"`` cancels as the call suspends there
    (what ``task.cancel()`` does to a task waiting at that point); ``"resuming"`` cancels
    once what it waits for is done, just before it would resume (a write that has just
    committed, a read that has just returned). ``suspensions`` counts the call's
    suspensions; fewer than ``k`` means the call ended without being cancelled.
    """

    def __init__(self, call: Coroutine[Any, Any, Any], k: int, when: str) -> None:
        self.call, self.k, self.when = call, k, when
        self.suspensions = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.call.__await__()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            try:
                yielded = inner.send(to_send) if to_throw is None else inner.throw(to_throw)
            except StopIteration as stop:
                return stop.value
            self.suspensions += 1
            if self.suspensions == self.k:
                self._cancel_at(yielded)
            try:
                to_send, to_throw = (yield yielded), None
            except BaseException as error:  # the task's cancellation, thrown in here
                to_send, to_throw = None, error

    def _cancel_at(self, awaited: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.when == "resuming" and isinstance(awaited, asyncio.Future):
            # Runs before the task's own wake-up (added once this yield reaches it).
            awaited.add_done_callback(lambda _: task.cancel())
        else:  # cancelled while running: takes effect as the task suspends here
            task.cancel()


@dataclass
class FirstUse:
    """One kind of first call: how to get a database it meets for the first time, the
    call, and what the log holds once the call's own change is durable."""

    prepare: Callable[[Backend, Path, str], Awaitable[str]]  # -> the target to open
    call: Callable[[Any], Coroutine[Any, Any, Any]]
    change: type[Event]  # the event the call writes
    history_after: list[Any]  # the history once the call (or its retry) is done


ITEMS = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}]
KEY = "a master key of thirty-two chars!"


def open_kind(kind: str, backend_name: str, target: str) -> Any:
    """A new session object of ``kind`` on ``target``, for session "s"."""
    if kind == "encrypted":
        return EncryptedSession(session=open_session(backend_name, target, "s"), encryption_key=KEY)
    if kind == "advanced" and backend_name.startswith("sqlite"):
        return AdvancedSQLiteSession(session_id="s", db_path=target, create_tables=True)
    if kind == "advanced":
        return AdvancedSQLAlchemySession("s", db_url=target, create_tables=True)
    return open_session(backend_name, target, "s")


async def new_database(backend: Backend, where: Path, kind: str) -> str:
    """A database nothing has opened: a new SQLite file, or server tables dropped."""
    if backend.name == "sqlite-file":
        return str(where / "new.db")
    await reset_server_database(backend.target)
    return backend.target


async def database_with_items(backend: Backend, where: Path, kind: str) -> str:
    """A database holding ``ITEMS`` in session "s", written by a session object that is
    closed again; a new session object opens it as a store this process has not used
    (on SQLite: a copy of the file under a path the process has not opened)."""
    if backend.name == "sqlite-file":
        template = where.parent / f"{kind}.db"
        if not template.exists():
            async with open_kind(kind, backend.name, str(template)) as writer:
                await writer.add_items(ITEMS)
        target = where / "copy.db"
        release_sqlite_files(template)  # its WAL checkpointed: the file holds everything
        shutil.copyfile(template, target)
        return str(target)
    target = await new_database(backend, where, kind)
    async with open_kind(kind, backend.name, target) as writer:
        await writer.add_items(ITEMS)
    return target


FIRST_USES = {
    "add_items": FirstUse(new_database, lambda s: s.add_items(ITEMS), ItemsAdded, ITEMS),
    "pop_item": FirstUse(database_with_items, lambda s: s.pop_item(), ItemPopped, ITEMS[:1]),
    "clear_session": FirstUse(database_with_items, lambda s: s.clear_session(), SessionCleared, []),
}
# The Advanced and encrypted sessions do more on their first call (the usage projection;
# the key tables and the session's data key): their add and pop are enumerated as well.
KINDS = [
    *(("session", name) for name in FIRST_USES),
    ("advanced", "add_items"),
    ("encrypted", "add_items"),
    ("encrypted", "pop_item"),
]


async def stored_changes(target: str, change: type[Event]) -> int:
    """How many ``change`` events session "s" has in the log (read by a store of its own)."""
    async with EventStore(target, projectors=()) as reader:
        return sum(isinstance(r.event, change) for r in await reader.read_stream("s"))


@pytest.mark.parametrize(("kind", "name"), KINDS)
async def test_a_first_call_cancelled_at_each_await_tells_the_truth(
    shared_backend: Backend, tmp_path: Path, kind: str, name: str
) -> None:
    """Cancelled at every suspension of a first add, pop or clear (as it suspends and as
    it resumes): ``CancelledAfterCommit`` only if its own event is in the log (for a pop,
    carrying the popped item), ``CancelledError`` only if it is not; never another
    error. The natural retry then leaves the history as one uncancelled call would.
    Both outcomes must occur."""
    use = FIRST_USES[name]
    seen: Counter[str] = Counter()
    for when in ("suspending", "resuming"):
        k = 0
        while True:
            k += 1
            where = tmp_path / f"{when}-{k}"
            where.mkdir()
            target = await use.prepare(shared_backend, where, kind)
            before = await stored_changes(target, use.change)
            async with open_kind(kind, shared_backend.name, target) as session:
                call = CancelAtSuspension(use.call(session), k, when)
                try:
                    result = await asyncio.ensure_future(call)
                    outcome = "finished"
                except CancelledAfterCommit as cancelled:
                    outcome, result = "committed", cancelled.result
                except asyncio.CancelledError:
                    outcome, result = "not written", None
                at = f"{kind}.{name} cancelled at suspension {k} of {call.suspensions} ({when})"
                written = await stored_changes(target, use.change) - before
                assert written == (outcome != "not written"), f"{at}: {outcome}, {written}"
                if name == "pop_item" and outcome != "not written":
                    assert result == ITEMS[-1], f"{at}: {outcome} with {result!r}"
                if outcome != "finished":
                    retried = await use.call(session)  # the caller's natural retry
                    if name == "pop_item":
                        assert retried == ITEMS[-1], f"{at}: the retry popped {retried!r}"
                assert await session.get_items() == use.history_after, at
            seen[outcome] += 1
            if outcome == "finished":
                assert call.suspensions < k, f"{at}: the cancellation was swallowed"
                break
    assert seen["committed"] > 0, f"no call was cancelled after it committed: {seen}"
    assert seen["not written"] > 0, f"no call was cancelled before it wrote: {seen}"


# -- branch changes cancelled after their commit --------------------------------------------

# At most this many sweeps over every suspension of a branch change.
BRANCH_SWEEPS = 20

BRANCH_CHANGES: dict[str, tuple[Callable[[Any], Coroutine[Any, Any, Any]], str]] = {
    # call on a session whose current branch is "b", and the current branch once done
    "clear_session": (lambda s: s.clear_session(), "main"),
    "switch_to_branch": (lambda s: s.switch_to_branch("main"), "main"),
    "delete_branch": (lambda s: s.delete_branch("b", force=True), "main"),
    "create_branch_from_turn": (lambda s: s.create_branch_from_turn(1, "c"), "c"),
}


@pytest.mark.parametrize("name", BRANCH_CHANGES)
async def test_a_branch_change_cancelled_after_its_commit_is_followed(
    tmp_path: Path, name: str
) -> None:
    """Cancelled at each suspension: once the change committed (``CancelledAfterCommit``),
    the session object is on the branch the log has as current, so its next add lands
    there; otherwise (``CancelledError``) it stays where it was."""
    call, after = BRANCH_CHANGES[name]
    seen: Counter[str] = Counter()
    # Whether a cancellation lands before the write starts depends on when the
    # database's thread picks the write up: sweep again (bounded) until both outcomes
    # this test covers have occurred.
    for sweep in range(BRANCH_SWEEPS):
        if seen["committed"] and seen["not written"]:
            break
        for when in ("suspending", "resuming"):
            k = 0
            while True:
                k += 1
                path = tmp_path / f"{sweep}-{when}-{k}.db"
                async with AdvancedSQLiteSession(session_id="s", db_path=path) as session:
                    await session.add_items(
                        [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
                    )
                    await session.create_branch_from_turn(2, "b")  # b: turn 1
                    task = asyncio.ensure_future(CancelAtSuspension(call(session), k, when))
                    try:
                        await task
                        outcome = "finished"
                    except CancelledAfterCommit:
                        outcome = "committed"
                    except asyncio.CancelledError:
                        outcome = "not written"
                    seen[outcome] += 1
                    await session.add_items([{"role": "user", "content": "next"}])
                at = f"{name} cancelled at suspension {k} ({when}): {outcome}"
                async with AdvancedSQLiteSession(session_id="s", db_path=path) as again:
                    branches = await again.list_branches()
                    current = next(b["branch_id"] for b in branches if b["is_current"])
                    assert current == ("b" if outcome == "not written" else after), at
                    assert await again.get_items(limit=1) == [
                        {"role": "user", "content": "next"}
                    ], at
                if outcome == "finished":
                    break
    assert seen["committed"] > 0, seen
    assert seen["not written"] > 0, seen
