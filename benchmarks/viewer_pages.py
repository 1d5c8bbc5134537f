"""How long the viewer's pages take to answer for a session of 100 items and one of
100,000 (``convstore DB serve``, docs/viewer.md).

Two sessions of the same shape (a user message, then tool calls and answers, added a
few hundred items per event), read through the viewer's ASGI application in process
(httpx, no network): each page is asked once to warm up, then 20 times (time travel
and the log 4 times), the sizes in turn so that the machine's busy moments hit both
alike; the median is reported. A conversation page reads the newest 50 items of a
branch (and pages further back 50 at a time), so it should cost the same at both
sizes; time travel folds the log up to the version asked and grows with it. On
PostgreSQL the tables are analysed after they are filled (as autovacuum would).

    python benchmarks/viewer_pages.py [--quick] [--json] [--backends sqlite-file,postgres]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from _common import (
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    parse_benchmark_args,
    probe,
    render_table,
)

from eventstore import EventStore
from sessions import AdvancedSQLAlchemySession, AdvancedSQLiteSession
from sessions.viewer import viewer

BACKENDS = ("sqlite-file", "postgres", "mysql")
PER_EVENT = 200


def items(count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(count):
        match n % 4:
            case 0:
                out.append({"role": "user", "content": f"question {n}: what about this?"})
            case 1:
                out.append(
                    {
                        "type": "function_call",
                        "call_id": f"c{n}",
                        "name": "lookup",
                        "arguments": json.dumps({"n": n}),
                    }
                )
            case 2:
                out.append({"type": "function_call_output", "call_id": f"c{n - 1}", "output": "ok"})
            case _:
                out.append({"role": "assistant", "content": f"answer {n}: " + "text " * 20})
    return out


async def fill(target: str, session_id: str, count: int) -> None:
    session: Any = (
        AdvancedSQLAlchemySession.from_url(session_id, url=target, create_tables=True)
        if "://" in target
        else AdvancedSQLiteSession(session_id=session_id, db_path=target, create_tables=True)
    )
    async with session:
        made = items(count)
        for start in range(0, count, PER_EVENT):
            await session.add_items(made[start : start + PER_EVENT])


async def timed(client: httpx.AsyncClient, paths: Sequence[str], repeat: int) -> list[float]:
    """Median ms of each of ``paths``, asked in turn ``repeat`` times (interleaved, so
    that a busy moment of the machine hits every size alike)."""
    times: list[list[float]] = [[] for _ in paths]
    for path in paths:  # warm-up
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
    for _ in range(repeat):
        for n, path in enumerate(paths):
            started = time.perf_counter()
            response = await client.get(path)
            times[n].append(time.perf_counter() - started)
            assert response.status_code == 200
    return [statistics.median(t) * 1000 for t in times]


PAGES = (
    ("conversation", "/c/{sid}"),
    ("conversation JSON", "/api/conversation/{sid}"),
    ("older page", "/c/{sid}?before={before}"),
    ("sessions list", "/?q={sid}"),
    ("usage", "/usage/{sid}"),
    ("branch tree", "/tree/{sid}"),
    ("log (first page, with audit)", "/log/{sid}"),
    ("time travel (latest)", "/travel/{sid}"),
)


async def measure(target: str, sizes: Sequence[int], repeat: int) -> dict[str, dict[str, float]]:
    for size in sizes:
        await fill(target, f"s{size}", size)
    if target.startswith("postgres"):
        # What autovacuum does soon after a bulk load: without statistics PostgreSQL
        # answered a session's last turn from the partial turns index, scanning every
        # user turn of the session (5.5 ms at 100,000 items instead of 0.3 ms).
        async with EventStore(target, create_tables=False, projectors=()) as store:
            await store.run(lambda conn: conn.exec_driver_sql("ANALYZE"), write=True)
    app = viewer(target, anonymous=True)
    results: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        before = {}
        for size in sizes:
            first = (await client.get(f"/api/conversation/s{size}")).json()
            before[size] = first["older"] or 1
        for name, path in PAGES:
            reps = max(3, repeat // 5) if "travel" in name or "log" in name else repeat
            paths = [path.format(sid=f"s{size}", before=before[size]) for size in sizes]
            for size, ms in zip(sizes, await timed(client, paths, reps), strict=True):
                results.setdefault(name, {})[str(size)] = ms
    await app.close()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = benchmark_parser(__doc__.split("\n")[0], BACKENDS)
    args = parse_benchmark_args(parser, BACKENDS, argv)
    sizes = (100, 10_000) if args.quick else (100, 100_000)
    repeat = 5 if args.quick else 20
    servers = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            target = str(Path(tmp) / "viewer.db")
            if backend != "sqlite-file":
                target = servers[backend]
                reason, _ = asyncio.run(probe(target))
                if reason is not None:
                    print(f"{backend}: skipped ({display_url(target)}: {reason})")
                    continue
                asyncio.run(drop_tables_at(target))
            report[backend] = asyncio.run(measure(target, sizes, repeat))
            if backend != "sqlite-file":
                asyncio.run(drop_tables_at(target))
    if args.json:
        print(json.dumps({"environment": environment(servers), "results": report}, indent=2))
        return
    print(describe_environment(environment(servers)))
    for backend, results in report.items():
        print(f"\n{backend}: median ms per page, by session size (items)")
        rows = [
            [name, *(f"{by_size[str(size)]:.1f}" for size in sizes)]
            for name, by_size in results.items()
        ]
        print(render_table(["page", *(f"{size:,}" for size in sizes)], rows))


if __name__ == "__main__":
    main()
