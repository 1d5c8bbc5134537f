"""Bytes on disk: convstore's sessions against the SDK's, holding the same items.

Each side stores the same conversation (``--items`` items, default 20,000) in one
session, one ``add_items`` call per item (the worst case for a log: one event per
item) or, with ``--turn 4``, four items per call. Two item sets: ``realistic`` (the
benchmarks' Responses-API items, about 200 bytes of JSON) and ``1kb`` (user and
assistant messages of about 1,000 bytes). Then the size each side's tables take:

- SQLite file: the database file after a checkpoint that empties the WAL (each side in
  its own file);
- PostgreSQL: ``pg_total_relation_size`` of each side's tables (heap, TOAST, indexes),
  after ``VACUUM``.

    python benchmarks/storage.py [--quick] [--json] [--items N] [--turn N] [--backends ...]
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    Status,
    async_url,
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_ratio,
    make_items,
    mean_json_size,
    parse_benchmark_args,
    probe,
    render_table,
    say,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessions.sqlalchemy import SQLAlchemySession
from sessions.sqlite import SQLiteSession

# The SDK's SQLAlchemySession cannot create its tables on MySQL/MariaDB (a VARCHAR
# without a length), so there is no SDK side to compare with there.
BACKENDS = ("sqlite-file", "postgres")
TITLES = {"sqlite-file": "SQLite file", "postgres": "PostgreSQL"}
SESSION = "storage"


@dataclass
class Result:
    backend: str
    item_set: str
    items: int
    per_call: int
    mean_item_bytes: float
    convstore_bytes: int
    sdk_bytes: int

    @property
    def ratio(self) -> float:
        return self.convstore_bytes / self.sdk_bytes


def kilobyte_items(count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """User and assistant messages of about 1,000 bytes of JSON each."""
    source = make_items(count * 6, seed=seed)
    texts = [i["content"] for i in source if i.get("role") == "user"]
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for n in range(count):
        body = " ".join(rng.choice(texts) for _ in range(7))[:960]
        if n % 2 == 0:
            items.append({"role": "user", "content": body})
        else:
            items.append(
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": body[:900], "annotations": []}],
                }
            )
    return items


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def sqlite_file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    return total + (wal.stat().st_size if wal.exists() else 0)


async def server_bytes(engine: AsyncEngine, tables: Sequence[str]) -> int:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        for table in tables:
            await conn.execute(text(f"VACUUM {table}"))
        total = 0
        for table in tables:
            size = await conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": table})
            total += int(size.scalar_one())
        return total


async def table_names(engine: AsyncEngine, prefix: str) -> list[str]:
    async with engine.connect() as conn:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        names = (await conn.execute(text(query))).scalars().all()
    return sorted(str(n) for n in names if str(n).startswith(prefix))


async def measure_sqlite(item_set: str, items: list[Any], per_call: int) -> Result:
    from agents.memory import SQLiteSession as SDKSQLiteSession

    with tempfile.TemporaryDirectory() as tmp:
        ours_path, sdk_path = Path(tmp) / "convstore.db", Path(tmp) / "sdk.db"
        ours = SQLiteSession(SESSION, db_path=ours_path)
        sdk = SDKSQLiteSession(SESSION, db_path=str(sdk_path))
        for batch in batches(items, per_call):
            await ours.add_items(batch)
            await sdk.add_items(batch)
        assert len(await ours.get_items()) == len(items) == len(await sdk.get_items())
        await ours.close()
        sdk.close()
        return Result(
            "sqlite-file",
            item_set,
            len(items),
            per_call,
            mean_json_size(items),
            sqlite_file_bytes(ours_path),
            sqlite_file_bytes(sdk_path),
        )


async def measure_server(
    backend: str, url: str, item_set: str, items: list[Any], per_call: int
) -> Result:
    from agents.extensions.memory import SQLAlchemySession as SDKSQLAlchemySession

    await drop_tables_at(url)
    engine = create_async_engine(async_url(url))
    try:
        ours = SQLAlchemySession(SESSION, engine=engine, create_tables=True)
        sdk = SDKSQLAlchemySession(SESSION, engine=engine, create_tables=True)
        for batch in batches(items, per_call):
            await ours.add_items(batch)
            await sdk.add_items(batch)
        assert len(await ours.get_items()) == len(items) == len(await sdk.get_items())
        await ours.close()
        ours_tables = await table_names(engine, "convstore_")
        sdk_tables = ["agent_sessions", "agent_messages"]
        return Result(
            backend,
            item_set,
            len(items),
            per_call,
            mean_json_size(items),
            await server_bytes(engine, ours_tables),
            await server_bytes(engine, sdk_tables),
        )
    finally:
        await engine.dispose()
        await drop_tables_at(url)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(__doc__.splitlines()[0], BACKENDS)
    parser.add_argument("--items", type=int, default=None, help="items per session")
    parser.add_argument("--turn", type=int, default=1, help="items per add_items call")
    args = parse_benchmark_args(parser, BACKENDS, argv)
    count = args.items or (2_000 if args.quick else 20_000)
    status = Status(enabled=None if not args.json else False)
    urls = {"postgres": args.postgres_url}
    servers: dict[str, str] = {}
    results: list[Result] = []
    sets = {"realistic": make_items(count), "1kb": kilobyte_items(count)}
    for backend in args.backends:
        if backend != "sqlite-file":
            reason, version = await probe(urls[backend])
            if reason is not None:
                say(status, f"{TITLES[backend]} skipped: {reason}", quiet=args.json)
                continue
            servers[TITLES[backend]] = f"{version} at {display_url(urls[backend])}"
        for name, items in sets.items():
            status.show(f"{TITLES[backend]}: {count:,} {name} items ...")
            if backend == "sqlite-file":
                result = await measure_sqlite(name, items, args.turn)
            else:
                result = await measure_server(backend, urls[backend], name, items, args.turn)
            results.append(result)
    status.clear()
    env = environment(servers)
    if args.json:
        out = [{**asdict(r), "ratio": r.ratio} for r in results]
        json.dump({"environment": env, "results": out}, sys.stdout, indent=2)
        print()
        return 0
    print(describe_environment(env))
    print(f"{count:,} items, {args.turn} per add_items call\n")
    rows = [
        (
            TITLES[r.backend],
            r.item_set,
            f"{r.mean_item_bytes:,.0f} B",
            f"{r.convstore_bytes / 1e6:,.1f} MB",
            f"{r.sdk_bytes / 1e6:,.1f} MB",
            fmt_ratio(r.ratio),
        )
        for r in results
    ]
    headers = ["backend", "items", "mean item", "convstore", "SDK", "ratio"]
    print(render_table(headers, rows, right=(2, 3, 4, 5)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
