"""Maintenance at scale: import, audit, verify, replay and export of a 1,000,000-item log.

Builds an export file of ``--sessions`` sessions x ``--events`` ItemsAdded events x
``--items`` items (default 1,000 x 100 x 10 = 1,000,000 items in 101,000 events, each
item about 100 bytes), with real chain hashes, then on each backend times, in this
order, each in a fresh process (so its peak memory is its own):

* ``import``   load the file into an empty database (projections kept current);
* ``audit``    the full audit (chains, versions, positions, streams, projections);
* ``verify``   projections against a fold of the log;
* ``rebuild``  ``projections.rebuild``: empty the projections, replay the log into them;
* ``replay``   what ``convstore DB replay`` does: an audit of the log, then a rebuild;
* ``export``   the whole log as JSON Lines (to a file).

    python benchmarks/maintenance.py --backends sqlite-file postgres \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/test_h3 [--json]

Figures: wall time, events/s and items/s, and the peak resident memory of the process
(``VmHWM``), which includes the interpreter and libraries (about 50 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from eventstore import EventStore, ItemsAdded, SessionStarted, encode_event, encode_items
from eventstore.chain import GENESIS, chain_hash
from projections import rebuild
from sessions.admin import audit_database, open_store, replay, verify_projections
from sessions.transfer import export_events, import_events

PHASES = ("import", "audit", "verify", "rebuild", "replay", "export")
TITLES = {"sqlite-file": "SQLite file", "postgres": "PostgreSQL", "mysql": "MariaDB"}
_encoder = msgspec.json.Encoder()


def build_export(path: Path, sessions: int, events: int, items: int) -> tuple[int, int]:
    """Write an export file; return (events, items) written."""
    start = 1_764_288_000_000_000  # a fixed time: the file is the same every run
    position = 0
    total_items = 0
    with path.open("wb") as out:
        for s in range(sessions):
            sid = f"session-{s:06d}"
            previous = GENESIS
            payloads = [encode_event(SessionStarted(metadata={"bench": "maintenance"}))]
            for e in range(events):
                batch = [
                    {
                        "role": "user" if (e + i) % 2 == 0 else "assistant",
                        "content": f"message {e}.{i} of {sid}: the order shipped yesterday",
                    }
                    for i in range(items)
                ]
                payloads.append(encode_event(ItemsAdded(items=encode_items(batch))))
                total_items += items
            lines = []
            for version, payload in enumerate(payloads, 1):
                position += 1
                event_id = str(uuid.UUID(int=position))
                event_type = "SessionStarted" if version == 1 else "ItemsAdded"
                schema_version = 1 if version == 1 else 2
                recorded_at = start + position
                previous = chain_hash(
                    previous,
                    stream_id=sid,
                    version=version,
                    event_id=event_id,
                    event_type=event_type,
                    schema_version=schema_version,
                    recorded_at=recorded_at,
                    payload=payload,
                )
                head = _encoder.encode(
                    {
                        "position": position,
                        "stream_id": sid,
                        "version": version,
                        "event_id": event_id,
                        "event_type": event_type,
                        "schema_version": schema_version,
                        "recorded_at": recorded_at,
                        "hash": previous,
                    }
                )
                lines.append(head[:-1] + b',"payload":' + payload + b"}\n")
            out.write(b"".join(lines))
    return position, total_items


async def run_phase(phase: str, target: str, export_file: Path, out_file: Path) -> dict[str, Any]:
    async with open_store(target, create=(phase == "import")) as store:
        started = time.perf_counter()
        if phase == "import":
            with export_file.open("rb") as source:
                result = await import_events(store, source)
            detail: Any = result.imported
        elif phase == "audit":
            report = await audit_database(store)
            assert report.ok, [str(f) for f in report.findings[:5]]
            detail = report.events
        elif phase == "verify":
            verified = await verify_projections(store)
            assert verified.ok
            detail = verified.events_replayed
        elif phase == "rebuild":
            detail = await rebuild(store)
        elif phase == "replay":
            detail = await replay(store)
        else:
            with out_file.open("wb") as out:
                detail = await export_events(store, out)
        seconds = time.perf_counter() - started
    return {"phase": phase, "seconds": seconds, "detail": detail, "peak_mb": peak_mb()}


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over from the parent across fork and exec, VmHWM starts afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (the parent stays small)."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def reset(target: str) -> None:
    """Remove the benchmark's database (a file) or its convstore tables (a server)."""
    if "://" not in target:
        for suffix in ("", "-wal", "-shm"):
            Path(target + suffix).unlink(missing_ok=True)
        return
    asyncio.run(_drop_tables(target))


async def _drop_tables(target: str) -> None:
    from sqlalchemy import inspect, text

    async with EventStore(target) as store:

        def drop(conn: Any) -> None:
            for name in inspect(conn).get_table_names():
                if name.startswith("convstore_"):
                    conn.execute(text(f"DROP TABLE {name}"))

        await store.run(drop, write=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite-file"], choices=list(TITLES))
    parser.add_argument("--postgres-url", default=os.environ.get("CONVSTORE_BENCH_POSTGRES_URL"))
    parser.add_argument("--mysql-url", default=os.environ.get("CONVSTORE_BENCH_MYSQL_URL"))
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100, help="ItemsAdded events a session")
    parser.add_argument("--items", type=int, default=10, help="items an event")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: one phase, one process
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        work = Path(args.workdir)
        result = asyncio.run(
            run_phase(args.phase, args.target, work / "log.jsonl", work / "out.jsonl")
        )
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="convstore-maint-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        events, items = build_export(work / "log.jsonl", args.sessions, args.events, args.items)
        size = (work / "log.jsonl").stat().st_size
        print(
            f"export file: {events:,} events, {items:,} items, {size / 1e6:,.0f} MB "
            f"(built in {time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
        results: dict[str, list[dict[str, Any]]] = {}
        for backend in args.backends:
            target = {
                "sqlite-file": str(work / "bench.db"),
                "postgres": args.postgres_url,
                "mysql": args.mysql_url,
            }[backend]
            if not target:
                sys.exit(f"--{backend}-url is needed for {backend}")
            reset(target)
            results[backend] = []
            for phase in PHASES:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--phase",
                        phase,
                        "--target",
                        target,
                        "--workdir",
                        str(work),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row.update(events=events, items=items)
                results[backend].append(row)
                print(
                    f"{TITLES[backend]:12} {phase:7} {row['seconds']:7.1f} s  "
                    f"{events / row['seconds']:9,.0f} events/s  "
                    f"{items / row['seconds']:10,.0f} items/s  peak {row['peak_mb']:6.0f} MB",
                    file=sys.stderr,
                )
            if phase == "export":
                same = digest(work / "out.jsonl") == digest(work / "log.jsonl")
                print(f"{TITLES[backend]:12} export == imported file: {same}", file=sys.stderr)
            reset(target)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
