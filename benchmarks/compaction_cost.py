"""A read after compaction costs what the compacted length costs, whatever the original.

For each original length (items in turns of 4: user, tool call, tool output,
assistant), one session on a SQLite file (or the database ``--url`` names) is filled
(not timed), then compacted keeping its last 5 turns (a summary + 20 items; the
summariser is a plain function, so the model's time is not measured). Beside it, a
session holding just the 21 items the compacted one shows, never compacted. Then
``get_items()`` (the whole history) and ``get_items(limit=20)`` are timed on both, in
alternate rounds; the ratio divides the compacted session's median by the plain
one's (1.00x: the original length costs the read nothing). The compaction's own time
(read, summarise, one event written) is shown too.

    python benchmarks/compaction_cost.py [--sizes 1000 100000] [--reads 400] [--json]
        [--url postgresql://... [--vacuum]]

On PostgreSQL the rows a compaction deletes leave dead index entries that a read of
the session steps over until (auto)vacuum removes them; ``--vacuum`` times the reads
after a ``VACUUM ANALYZE`` of the items table, as they are once autovacuum has run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sessions import SQLAlchemySession, SQLiteSession, StoreSession

KEEP_TURNS = 5
FILL_BATCH = 10_000
ROUNDS = 8


def turn(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {n}: what about item {n}?"},
        {"type": "function_call", "call_id": f"c{n}", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": f"c{n}", "output": f"record {n} " * 8},
        {"role": "assistant", "content": f"answer {n}, from record {n}."},
    ]


async def summarize(items: list[Any]) -> str:
    return f"{len(items)} earlier items, summarised."


def open_session(target: str, session_id: str) -> StoreSession:
    if "://" in target:
        return SQLAlchemySession(session_id, db_url=target, create_tables=True)
    return SQLiteSession(session_id, target)


async def fill(session: StoreSession, count: int) -> None:
    items = [item for n in range(count // 4) for item in turn(n)]
    for at in range(0, len(items), FILL_BATCH):
        await session.add_items(items[at : at + FILL_BATCH])


async def timed(call: Any, reads: int) -> list[float]:
    out = []
    for _ in range(reads):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def vacuum_items(url: str) -> None:
    """``VACUUM ANALYZE`` the history's items table of the PostgreSQL database ``url``."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://", 1), isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as conn:
        await conn.execute(text("VACUUM ANALYZE convstore_items"))
    await engine.dispose()


async def measure(target: str, size: int, reads: int, vacuum: bool = False) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]  # a database given by --url may hold earlier runs
    compacted = open_session(target, f"compacted-{size}-{run}")
    plain = open_session(target, f"plain-{size}-{run}")
    try:
        await fill(compacted, size)
        start = time.perf_counter()
        result = await compacted.compact(summarize=summarize, keep_last_turns=KEEP_TURNS)
        compact_seconds = time.perf_counter() - start
        assert result is not None
        if vacuum:  # what autovacuum does later: the deleted rows' index entries go
            await vacuum_items(target)
        shown = await compacted.get_items()
        await plain.add_items(shown)
        assert await plain.get_items() == shown
        times: dict[str, list[float]] = {k: [] for k in ("c_all", "p_all", "c_20", "p_20")}
        per_round = max(1, reads // ROUNDS)
        for _ in range(ROUNDS):
            times["c_all"] += await timed(compacted.get_items, per_round)
            times["p_all"] += await timed(plain.get_items, per_round)
            times["c_20"] += await timed(lambda: compacted.get_items(limit=20), per_round)
            times["p_20"] += await timed(lambda: plain.get_items(limit=20), per_round)
        med = {k: statistics.median(v) for k, v in times.items()}
        return {
            "original_items": size,
            "shown_items": len(shown),
            "compact_ms": compact_seconds * 1000,
            "read_all_us": med["c_all"] * 1e6,
            "read_all_plain_us": med["p_all"] * 1e6,
            "read_all_ratio": med["c_all"] / med["p_all"],
            "read_20_us": med["c_20"] * 1e6,
            "read_20_plain_us": med["p_20"] * 1e6,
            "read_20_ratio": med["c_20"] / med["p_20"],
        }
    finally:
        await compacted.close()
        await plain.close()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--url", help="a PostgreSQL or MariaDB URL (default: a SQLite file)")
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="PostgreSQL: VACUUM ANALYZE the items table after compacting, before timing",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        target = args.url or str(Path(folder) / "compaction.db")
        rows = [await measure(target, size, args.reads, args.vacuum) for size in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'original':>9} {'shown':>5} {'compact':>9} {'get_items()':>24} {'limit=20':>24}")
    for r in rows:
        print(
            f"{r['original_items']:>9,} {r['shown_items']:>5} {r['compact_ms']:>7.1f}ms "
            f"{r['read_all_us']:>8.1f}us vs {r['read_all_plain_us']:>6.1f}us "
            f"{r['read_all_ratio']:>4.2f}x "
            f"{r['read_20_us']:>8.1f}us vs {r['read_20_plain_us']:>6.1f}us "
            f"{r['read_20_ratio']:>4.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
