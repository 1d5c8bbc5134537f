"""Child processes of the crash and many-writer tests (``python -m tests.reliability._writer``).

``crash BACKEND TARGET WORKER SEED``: add items forever, to the worker's own session
and to a shared one, printing one line per acknowledged add (``session n count``);
the parent kills it at a random moment.

``mixed BACKEND TARGET WORKER OPS SESSIONS``: 8 tasks, each doing OPS operations on
its own session (SESSIONS=many) or all on one (SESSIONS=one: adds, pops and clears);
prints one JSON line: the adds acknowledged and the items each pop returned.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Iterator
from typing import Any

TASKS = 8


def open_session(backend: str, target: str, session_id: str) -> Any:
    from sessions import SQLAlchemySession, SQLiteSession

    if backend.startswith("sqlite"):
        return SQLiteSession(session_id, target)
    return SQLAlchemySession(session_id, db_url=target)


def crash_plan(worker: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """The adds a crash writer makes, in order: (session id, n, item count). Mostly a
    few items to the writer's own session or the shared one; one add in ten is 300
    items, so kills land inside long appends too. The parent replays it to know what
    each add it saw in the log was meant to hold."""
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        session_id = f"w{worker}" if rng.random() < 0.5 else "shared"
        count = 300 if rng.random() < 0.1 else rng.randint(1, 3)
        yield session_id, n, count


async def crash(backend: str, target: str, worker: int, seed: int) -> None:
    sessions = {sid: open_session(backend, target, sid) for sid in (f"w{worker}", "shared")}
    for session_id, n, count in crash_plan(worker, seed):
        items = [{"w": worker, "n": n, "i": i} for i in range(count)]
        await sessions[session_id].add_items(items)
        print(session_id, n, count, flush=True)


async def mixed(backend: str, target: str, worker: int, ops: int, sessions: str) -> None:
    added: list[list[Any]] = []
    popped: list[Any] = []
    cleared = 0

    async def task(t: int) -> None:
        nonlocal cleared
        rng = random.Random(worker * 100 + t)
        sid = "one" if sessions == "one" else f"p{worker}t{t}"
        session = open_session(backend, target, sid)
        try:
            for n in range(ops):
                roll = rng.random() if sessions == "one" else 0.0
                if roll < 0.6:
                    items = [
                        {"w": worker, "t": t, "n": n, "i": i} for i in range(rng.randint(1, 3))
                    ]
                    await session.add_items(items)
                    added.append(items)
                elif roll < 0.95:
                    popped.append(await session.pop_item())
                else:
                    await session.clear_session()
                    cleared += 1
        finally:
            await session.close()

    await asyncio.gather(*(task(t) for t in range(TASKS)))
    print(json.dumps({"added": added, "popped": popped, "cleared": cleared}), flush=True)


def main() -> None:
    mode, backend, target, *rest = sys.argv[1:]
    if mode == "crash":
        asyncio.run(crash(backend, target, int(rest[0]), int(rest[1])))
    else:
        asyncio.run(mixed(backend, target, int(rest[0]), int(rest[1]), rest[2]))


if __name__ == "__main__":
    # Not needed here: a faster start. Only in the child process: the crash test
    # imports this module (crash_plan), and the suite needs the real package.
    sys.modules.setdefault("agents", None)  # type: ignore[arg-type]
    main()
