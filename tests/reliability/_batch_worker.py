"""A worker process of the concurrent stateful test (``python -m tests.reliability._batch_worker``).

``BACKEND TARGET``: one engine for the process. Reads one JSON line per batch from
standard input, a list of calls ``{"session", "call", "items"}``, and runs them all at
once, one task each, every call on a NEW session object (as a web application opens
one per request); answers with one JSON line, the result of each call (the item
``pop_item`` returned, else null), or ``{"error": ...}``. An empty line ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from typing import Any

from tests.reliability._requests import make_engine


async def call(engine: Any, op: dict[str, Any]) -> Any:
    from sessions import SQLAlchemySession

    async with SQLAlchemySession(op["session"], engine=engine) as session:
        if op["call"] == "add":
            await session.add_items(op["items"])
            return None
        if op["call"] == "pop":
            return await session.pop_item()
        await session.clear_session()
        return None


async def main(backend: str, target: str) -> None:
    engine = make_engine(backend, target)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if not line.strip():
                break
            try:
                results = await asyncio.gather(*(call(engine, op) for op in json.loads(line)))
                answer: Any = {"results": results}
            except Exception:
                answer = {"error": traceback.format_exc()}
            print(json.dumps(answer), flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.modules.setdefault("agents", None)  # type: ignore[arg-type]  # not needed: faster start
    asyncio.run(main(*sys.argv[1:3]))
