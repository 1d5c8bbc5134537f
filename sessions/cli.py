"""``convstore DB COMMAND``: look into a conversation store from the shell.

DB is a SQLite path or a SQLAlchemy URL. Output is a readable table by default and
JSON with ``--json``. Exit status: 0 on success, 1 when a check finds problems,
2 on an error (bad arguments, unreachable database, missing tables).

The command lives in ``sessions`` (not ``eventstore``) because its commands read
projections, and dependencies only flow ``sessions -> projections -> eventstore``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from eventstore import ConvstoreError, EventStore, ItemPopped, ItemsAdded, RecordedEvent
from projections.history import MAX_ITEMS_PER_EVENT

from . import admin
from ._progress import ProgressBar

_json = msgspec.json.Encoder()


def _emit_json(value: Any) -> None:
    sys.stdout.write(_json.encode(value).decode() + "\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _summary(recorded: RecordedEvent) -> str:
    event = recorded.event
    if isinstance(event, ItemsAdded):
        return f"{len(event.items)} item(s) on {event.branch_id}"
    if isinstance(event, ItemPopped):
        version, index = divmod(event.seq, MAX_ITEMS_PER_EVENT)
        return f"removed item {index + 1} of v{version} on {event.branch_id}"
    fields = msgspec.structs.asdict(event)
    return ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, {}, ()))


def _item_text(item: Any) -> str:
    if isinstance(item, dict):
        content = item.get("content", item.get("output", item.get("arguments", "")))
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        who = item.get("role") or item.get("type") or "item"
        text = f"{who}: {content}"
    else:
        text = repr(item)
    return text if len(text) <= 100 else text[:97] + "..."


async def _sessions(store: EventStore, args: argparse.Namespace) -> int:
    found = await admin.list_sessions(store)
    if args.json:
        _emit_json(found)
    else:
        _table(
            ["session", "events", "items", "created (UTC)", "updated (UTC)"],
            [
                (
                    s.session_id,
                    s.version,
                    s.items,
                    f"{s.created_at:%Y-%m-%d %H:%M:%S}",
                    f"{s.updated_at:%Y-%m-%d %H:%M:%S}",
                )
                for s in found
            ],
        )
    return 0


async def _log(store: EventStore, args: argparse.Namespace) -> int:
    events = await admin.session_log(store, args.session)
    if args.json:
        _emit_json(
            [
                {
                    "position": e.position,
                    "version": e.version,
                    "event_id": e.event_id,
                    "type": e.event_type,
                    "schema_version": e.schema_version,
                    "recorded_at": e.recorded_at,
                    "hash": e.hash,
                    "event": msgspec.json.decode(e.payload),
                }
                for e in events
            ]
        )
    else:
        _table(
            ["ver", "pos", "recorded (UTC)", "event", "details", "hash"],
            [
                (
                    e.version,
                    e.position,
                    f"{e.recorded_at:%Y-%m-%d %H:%M:%S.%f}",
                    e.event_type,
                    _summary(e),
                    e.hash[:12],
                )
                for e in events
            ],
        )
    return 0


async def _history(store: EventStore, args: argparse.Namespace) -> int:
    items = await admin.session_history(store, args.session, branch=args.branch, as_of=args.as_of)
    if args.json:
        _emit_json(items)
    else:
        _table(["#", "item"], [(n, _item_text(item)) for n, item in enumerate(items, 1)])
    return 0


async def _replay(store: EventStore, args: argparse.Namespace) -> int:
    bar = ProgressBar(await store.count_events(), "replaying")
    replayed = await admin.replay(store, progress=bar.update)
    bar.close()
    if args.json:
        _emit_json({"replayed_to_position": replayed})
    else:
        print(f"rebuilt every projection from the log (up to position {replayed:,})")
    return 0


async def _verify(store: EventStore, args: argparse.Namespace) -> int:
    bar = ProgressBar(await store.count_events(), "verifying")
    report = await admin.verify_projections(store, progress=bar.update)
    bar.close()
    if args.json:
        _emit_json({"ok": report.ok, "differences": [str(d) for d in report.differences]})
    elif report.ok:
        print(f"projections match a replay of the log ({report.events_replayed:,} events)")
    else:
        for difference in report.differences:
            print(difference)
        print(f"{len(report.differences)} difference(s) between the projections and the log")
    return 0 if report.ok else 1


COMMANDS = {
    "sessions": _sessions,
    "log": _log,
    "history": _history,
    "replay": _replay,
    "verify": _verify,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convstore",
        description="Inspect and maintain a convstore database (SQLite path or SQLAlchemy URL).",
    )
    parser.add_argument("db", help="SQLite file or database URL, e.g. postgresql://user@host/db")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("sessions", parents=[common], help="list sessions")
    log = sub.add_parser("log", parents=[common], help="the events of one session")
    log.add_argument("session")
    history = sub.add_parser("history", parents=[common], help="the items of one session")
    history.add_argument("session")
    history.add_argument("--branch", default="main", help="branch (default: main)")
    history.add_argument("--as-of", type=int, metavar="VERSION", help="as it was at this version")
    sub.add_parser("replay", parents=[common], help="rebuild every projection from the log")
    sub.add_parser("verify", parents=[common], help="compare projections with a replay")
    return parser


async def run(args: argparse.Namespace) -> int:
    """Run one parsed command; return the exit status."""
    try:
        async with admin.open_store(args.db) as store:
            return await COMMANDS[args.command](store, args)
    except ConvstoreError as error:
        print(f"convstore: {error}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    if "://" not in args.db and not Path(args.db).exists():
        print(f"convstore: no database at {args.db}", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(run(args)))
