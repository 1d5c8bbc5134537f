"""Child process of the request-per-call test (``python -m tests.reliability._requests``).

``BACKEND TARGET WORKER TASKS REQUESTS``: what a web application's worker process does.
One engine for the process; TASKS tasks serve REQUESTS requests each, one after
another, all at once; every request opens a NEW session object on the engine for one
of a few users, makes one call and closes it. The users are shared by every task of
every process: ``ada`` (AdvancedSQLAlchemySession), ``cy`` (SQLAlchemySession) and
``eve`` (EncryptedSession over an AdvancedSQLAlchemySession). Calls: add_items (one to
three items), pop_item, clear_session, and for the Advanced users
create_branch_from_turn, switch_to_branch and delete_branch. A branch call may be
refused as the SDK's would be (no such turn yet, a branch deleted meanwhile, the
current branch or main to delete): those are counted;
any other error ends the process with a traceback.

Prints one JSON line: how many calls of each kind succeeded, and the refusals.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

KEY = b"k" * 32  # the encrypted user's master key (32 raw bytes: no key derivation)
USERS = ("ada", "cy", "eve")
_ASYNC = {"postgresql": "postgresql+asyncpg", "mysql": "mysql+asyncmy"}


def make_engine(backend: str, target: str) -> AsyncEngine:
    """The process's one engine, as a web application creates it at start-up."""
    if backend.startswith("sqlite"):
        # One write at a time on a SQLite file: with a few dozen requests writing at
        # once on a busy machine, a writer may queue longer than aiosqlite's default
        # busy timeout (5 s) and get LockTimeoutError, as documented; an application
        # expecting that many concurrent writers raises it.
        return create_async_engine(f"sqlite+aiosqlite:///{target}", connect_args={"timeout": 60})
    scheme, rest = target.split("://", 1)
    return create_async_engine(f"{_ASYNC[scheme.split('+')[0]]}://{rest}", pool_size=10)


def open_session(engine: AsyncEngine, user: str) -> Any:
    from sessions import AdvancedSQLAlchemySession, EncryptedSession, SQLAlchemySession

    if user == "cy":
        return SQLAlchemySession(user, engine=engine)
    advanced = AdvancedSQLAlchemySession(user, engine=engine)
    if user == "eve":
        return EncryptedSession(session=advanced, encryption_key=KEY, ttl=None)
    return advanced


async def request(engine: AsyncEngine, rng: random.Random, tag: str, done: Counter[str]) -> None:
    from eventstore import BranchError, TurnNotFoundError

    user = rng.choice(USERS)
    roll = rng.random()
    async with open_session(engine, user) as session:
        if roll < 0.5 or (roll >= 0.7 and user == "cy"):
            items: list[dict[str, Any]] = [{"role": "user", "content": f"{tag} asks"}]
            items += [
                {"role": "assistant", "content": f"{tag} {n}"} for n in range(rng.randint(0, 2))
            ]
            await session.add_items(items)
            done["add"] += 1
        elif roll < 0.63:
            await session.pop_item()
            done["pop"] += 1
        elif roll < 0.7:
            await session.clear_session()
            done["clear"] += 1
        elif roll < 0.85:
            try:
                await session.create_branch_from_turn(rng.randint(1, 3), f"b-{tag}")
                done["branch"] += 1
            except TurnNotFoundError:
                done["refused: no such turn"] += 1
        elif roll < 0.95:
            branches = [b["branch_id"] for b in await session.list_branches()]
            try:
                await session.switch_to_branch(rng.choice(branches))
                done["switch"] += 1
            except BranchError:
                done["refused: branch gone"] += 1
        else:
            branches = [b["branch_id"] for b in await session.list_branches()]
            try:
                await session.delete_branch(rng.choice(branches))
                done["delete"] += 1
            except BranchError:  # main, the current branch, or deleted meanwhile
                done["refused: cannot delete"] += 1


async def main(backend: str, target: str, worker: int, tasks: int, requests: int) -> None:
    engine = make_engine(backend, target)
    done: Counter[str] = Counter()

    async def task(t: int) -> None:
        rng = random.Random(worker * 1000 + t)
        for n in range(requests):
            await request(engine, rng, f"w{worker}t{t}n{n}", done)

    try:
        await asyncio.gather(*(task(t) for t in range(tasks)))
    finally:
        await engine.dispose()
    print(json.dumps(dict(done)), flush=True)


if __name__ == "__main__":
    sys.modules.setdefault("agents", None)  # type: ignore[arg-type]  # not needed: faster start
    _, backend, target, worker, tasks, requests = sys.argv
    asyncio.run(main(backend, target, int(worker), int(tasks), int(requests)))
