"""``convstore DB COMMAND``: look into and maintain a conversation store from the shell.

DB is a SQLite path or a SQLAlchemy URL. Output is a readable table by default and
JSON with ``--json`` (before or after the command). Exit status: 0 on success, 1 when
a check finds problems (audit, verify, a refused replay), 2 on an error (bad
arguments, unreachable database, missing file or tables, unknown session), always
with one line on standard error.

Commands that only read never create or change a file: a SQLite path must already
be a convstore database. ``init``, ``import`` and ``import-sdk`` create the tables.

The command lives in ``sessions`` (not ``eventstore``) because its commands read
projections, and dependencies only flow ``sessions -> projections -> eventstore``.
It never imports the Agents SDK, so it starts quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from eventstore import (
    AuditReport,
    ConvstoreError,
    EventStore,
    InvalidArgumentError,
    ItemPopped,
    ItemsAdded,
    RecordedEvent,
)
from eventstore.checkpoints import load_checkpoints
from projections.history import MAX_ITEMS_PER_EVENT
from projections.usage_table import USAGE

from . import admin
from ._progress import ProgressBar

_json = msgspec.json.Encoder()

EXAMPLES = """\
examples:
  convstore chat.db init                       create the tables
  convstore chat.db sessions                   every session, with sizes and times
  convstore chat.db log user_123               the events of a session (versions, hashes)
  convstore chat.db history user_123 --as-of 4 the items as they were at version 4
  convstore chat.db audit                      check the chain and projections (exit 1 on findings)
  convstore chat.db checkpoint --key-file k -o heads.jsonl
  convstore chat.db audit --against heads.jsonl --key-file k
  convstore chat.db export -o backup.jsonl     JSON Lines, one event a line
  convstore copy.db import backup.jsonl        (- reads standard input)
  convstore chat.db import-sdk sdk_sessions.db the SDK's own session tables, into the log
  convstore chat.db retention --older-than 90d --dry-run
  convstore chat.db tree user_123              the branches, with fork points and previews
  convstore chat.db usage user_123 --json      tokens per turn, branch and session
  convstore chat.db shred user_123             make an encrypted session unreadable
  convstore chat.db serve                      browse it at http://127.0.0.1:8765/
  convstore --json postgresql://user@host/db sessions

exit status: 0 ok, 1 findings, 2 error (one line on standard error)
"""


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'convstore -h')")


# -- output -------------------------------------------------------------------------


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
    text = text.replace("\n", " ")
    return text if len(text) <= 100 else text[:97] + "..."


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


# -- argument types ---------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``1w2d``, ``30m``, ``45s`` as a timedelta."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 90d, 12h, 1w2d, 30m, 45s)"
        )
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    return total


def format_duration(value: timedelta) -> str:
    """A timedelta the way :func:`parse_duration` reads it (``1d12h``; ``0s``)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_as_of(text: str) -> int | datetime:
    """A version number, or an ISO 8601 time (``Z`` or an offset; UTC if none)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a version nor a time (e.g. 4, or 2026-01-31T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


def _audit_key(args: argparse.Namespace) -> bytes | None:
    if args.key_file:
        try:
            key = Path(args.key_file).read_bytes().strip()
        except OSError as error:
            raise UsageError(
                f"cannot read the key file: {error.strerror}: {args.key_file}"
            ) from None
        if not key:
            raise UsageError(f"the key file {args.key_file} is empty")
        return key
    env = os.environ.get("CONVSTORE_AUDIT_KEY")
    return env.encode() if env else None


# -- commands -------------------------------------------------------------------


async def _init(store: EventStore, args: argparse.Namespace) -> int:
    # Every projection a session class keeps (admin.init_database): an Advanced
    # session opened with create_tables=False then finds its usage tables too.
    store.keep([USAGE])
    await store.ensure_tables()
    if args.json:
        _emit_json({"initialised": True})
    else:
        print("the convstore tables are ready")
    return 0


async def _sessions(store: EventStore, args: argparse.Namespace) -> int:
    found = await admin.list_sessions(store)
    if args.json:
        _emit_json(found)
    else:
        _table(
            ["session", "events", "items", "created (UTC)", "updated (UTC)"],
            [
                (s.session_id, s.version, s.items, _when(s.created_at), _when(s.updated_at))
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


async def _tree(store: EventStore, args: argparse.Namespace) -> int:
    nodes = await admin.session_tree(store, args.session)
    if args.json:
        _emit_json(nodes)
        return 0
    open_levels: dict[int, bool] = {}  # depth -> a sibling still follows at that depth
    for n, node in enumerate(nodes):
        lead = ""
        if node.depth:
            rest = _until_shallower(nodes[n + 1 :], node.depth)
            more = any(later.depth == node.depth for later in rest)
            open_levels[node.depth] = more
            lead = "".join("│   " if open_levels.get(k) else "    " for k in range(1, node.depth))
            lead += "├── " if more else "└── "
        where = ""
        if node.parent_branch_id is not None:
            where = (
                "  from the start"
                if node.fork_turn is None
                else f"  after turn {node.fork_turn} of {node.parent_branch_id}: "
                f"{node.fork_preview!r}"
            )
        current = " (current)" if node.is_current else ""
        print(
            f"{lead}{node.branch_id}{current}  {node.items} item(s), "
            f"{node.user_turns} turn(s){where}"
        )
    return 0


def _until_shallower(nodes: Sequence[admin.TreeNode], depth: int) -> list[admin.TreeNode]:
    """The nodes after one at ``depth``, up to the next one that is shallower."""
    found = []
    for node in nodes:
        if node.depth < depth:
            break
        found.append(node)
    return found


async def _usage(store: EventStore, args: argparse.Namespace) -> int:
    from .usage import render_usage, usage_report

    stats = await usage_report(store, args.session, branch=args.branch)
    if args.json:
        _emit_json(stats.to_dict())
    else:
        print(render_usage(stats))
    return 0


async def _shred(store: EventStore, args: argparse.Namespace) -> int:
    from . import _keys
    from ._maintenance import ensure_key_tables, open_store, shred_session

    if await store.stream_info(args.session) is None:
        raise admin.NotFoundError(f"no session {args.session!r} in this database")
    keys, owned = open_store(args.key_db) if args.key_db else (store, False)
    try:
        await ensure_key_tables(keys)
        row = await keys.run(lambda conn: _keys.read_data_key_tx(conn, args.session))
    finally:
        if owned:
            await keys.close()
    if row is None and not args.force:
        raise InvalidArgumentError(
            f"session {args.session!r} has no data key (it is not encrypted), so shredding "
            "cannot make its items unreadable: remove it with 'retention' instead, or "
            "pass --force to refuse encrypting it under this id from now on"
        )
    shredded = await shred_session(store, args.session, key_store=args.key_db)
    if args.json:
        _emit_json({"session": args.session, "shredded": shredded})
    elif shredded:
        print(f"destroyed the data key of {args.session!r}: its items cannot be read any more")
    else:
        print(f"the data key of {args.session!r} was destroyed already")
    return 0


def _report_findings(report: AuditReport, args: argparse.Namespace) -> int:
    if args.json:
        _emit_json(
            {
                "ok": report.ok,
                "sessions": report.streams,
                "events": report.events,
                "head_position": report.head_position,
                "removed_sessions": report.removed_streams,
                "checkpoints_checked": report.checkpoints_checked,
                "findings": [
                    {
                        "session": f.stream_id,
                        "version": f.version,
                        "check": f.check,
                        "problem": f.problem,
                    }
                    for f in report.findings
                ],
                "notes": list(report.notes),
            }
        )
        return 0 if report.ok else 1
    for finding in report.findings:
        print(finding)
    for note in report.notes:
        print(f"note: {note}")
    what = f"{report.streams:,} session(s), {report.events:,} event(s)"
    if report.checkpoints_checked:
        what += f", against {report.checkpoints_checked:,} checkpoint(s)"
    if report.ok:
        print(f"audit passed: {what}, no finding")
    else:
        print(f"audit FAILED: {len(report.findings)} finding(s) in {what}")
    return 0 if report.ok else 1


async def _audit(store: EventStore, args: argparse.Namespace) -> int:
    checkpoints = None
    if args.against:
        checkpoints = load_checkpoints(args.against_data, key=_audit_key(args))
    bar = ProgressBar(await store.count_events(), "auditing")
    report = await admin.audit_database(store, checkpoints=checkpoints, progress=bar.update)
    bar.close()
    return _report_findings(report, args)


async def _checkpoint(store: EventStore, args: argparse.Namespace) -> int:
    data = await admin.take_checkpoints(store, key=_audit_key(args))
    _write_output(args.output, data)
    if args.output:
        lines = data.count(b"\n") - 2
        print(f"checkpoints of {lines:,} session(s) written to {args.output}", file=sys.stderr)
    return 0


async def _verify(store: EventStore, args: argparse.Namespace) -> int:
    bar = ProgressBar(await store.count_events(), "verifying")
    report = await admin.verify_projections(store, progress=bar.update)
    bar.close()
    if args.json:
        _emit_json({"ok": report.ok, "differences": [str(d) for d in report.differences]})
    elif report.ok:
        print(f"projections match a fold of the log ({report.events_replayed:,} events)")
    else:
        for difference in report.differences:
            print(difference)
        print(f"{len(report.differences)} difference(s) between the projections and the log")
    return 0 if report.ok else 1


async def _replay(store: EventStore, args: argparse.Namespace) -> int:
    bar = ProgressBar(await store.count_events(), "replaying")
    try:
        replayed = await admin.replay(store, progress=bar.update)
    except admin.AuditFailedError as error:
        bar.close()
        for finding in error.report.findings:
            print(f"convstore: {finding}", file=sys.stderr)
        print(
            f"convstore: refusing to replay: the log does not pass its audit "
            f"({len(error.report.findings)} finding(s)); projections left as they are",
            file=sys.stderr,
        )
        return 1
    bar.close()
    if args.json:
        _emit_json({"replayed_to_position": replayed})
    else:
        print(f"rebuilt every projection from the log (up to position {replayed:,})")
    return 0


def _write_output(path: str | None, data: bytes) -> None:
    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(path).write_bytes(data)


async def _export(store: EventStore, args: argparse.Namespace) -> int:
    from .transfer import export_events

    bar = ProgressBar(await store.count_events(), "exporting")
    out: BinaryIO = args.output_file or sys.stdout.buffer
    try:
        count = await export_events(store, out, session=args.session, progress=bar.update)
    finally:
        bar.close()
    if args.output:
        print(f"{count:,} event(s) written to {args.output}", file=sys.stderr)
    return 0


async def _import(store: EventStore, args: argparse.Namespace) -> int:
    from .transfer import import_events

    source: BinaryIO = args.input_file
    bar = ProgressBar(args.input_events, "importing")
    try:
        result = await import_events(store, source, progress=bar.update)
    finally:
        bar.close()
    if args.json:
        _emit_json(result)
    else:
        print(
            f"imported {result.imported:,} event(s) of {result.sessions:,} session(s); "
            f"{result.skipped:,} already there"
        )
    return 0


async def _import_sdk(store: EventStore, args: argparse.Namespace) -> int:
    from .sdk_import import import_sdk

    bar = ProgressBar(0, "importing sessions")
    result = await import_sdk(
        store,
        args.source,
        sessions_table=args.sessions_table,
        messages_table=args.messages_table,
        progress=bar.update,
    )
    bar.close()
    if args.json:
        _emit_json(result)
        return 0
    for note in result.notes:
        print(f"note: {note}")
    print(
        f"imported {result.items:,} item(s), {result.branches:,} branch(es) and "
        f"{result.usage:,} usage record(s) into {result.sessions:,} session(s); "
        f"{result.up_to_date:,} session(s) already up to date"
    )
    return 0


async def _retention(store: EventStore, args: argparse.Namespace) -> int:
    removed = await admin.retention(store, args.older_than, dry_run=args.dry_run)
    if args.json:
        _emit_json({"dry_run": args.dry_run, "sessions": removed})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    _table(
        ["session", "events", "last written (UTC)"],
        [(r.session_id, r.version, _when(r.updated_at)) for r in removed],
    )
    print(
        f"{verb} {len(removed)} session(s) idle for longer than {format_duration(args.older_than)}"
    )
    return 0


# -- serve: the web viewer (sessions/viewer) ------------------------------------------


async def _serve(store: EventStore, args: argparse.Namespace) -> int:
    from .viewer.serve import serve

    return await serve(store, args)


def _add_serve(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    from .viewer.serve import add_arguments  # (argparse only: no extra needed)

    add_arguments(add("serve", "a local web viewer: sessions, branches, time travel, usage"))


@dataclass(frozen=True, slots=True)
class Command:
    run: Callable[[EventStore, argparse.Namespace], Awaitable[int]]
    creates: bool = False  # may create the database and its tables


COMMANDS = {
    "init": Command(_init, creates=True),
    "sessions": Command(_sessions),
    "log": Command(_log),
    "history": Command(_history),
    "audit": Command(_audit),
    "checkpoint": Command(_checkpoint),
    "verify": Command(_verify),
    "replay": Command(_replay),
    "export": Command(_export),
    "import": Command(_import, creates=True),
    "import-sdk": Command(_import_sdk, creates=True),
    "retention": Command(_retention),
    "tree": Command(_tree),
    "usage": Command(_usage),
    "shred": Command(_shred),
    "serve": Command(_serve),
}


def _version() -> str:
    try:
        return metadata.version("convstore")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convstore",
        description="Inspect and maintain a convstore database (SQLite path or SQLAlchemy URL).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convstore {_version()}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("db", help="SQLite file or database URL, e.g. postgresql://user@host/db")
    common = _Parser(add_help=False)
    # SUPPRESS: a --json given before the command is not reset by the subparser.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help)

    add("init", "create the convstore tables (nothing changes where they exist)")
    add("sessions", "list sessions")
    add("log", "the events of one session").add_argument("session")
    history = add("history", "the items of one session, now or as of a version or time")
    history.add_argument("session")
    history.add_argument("--branch", default="main", help="branch (default: main)")
    history.add_argument(
        "--as-of", type=parse_as_of, metavar="V|TIME", help="a version, or an ISO 8601 time"
    )
    audit = add("audit", "check the hash chains, versions, positions and projections")
    audit.add_argument("--against", metavar="CHECKPOINTS", help="a file made by 'checkpoint'")
    audit.add_argument("--key-file", help="the audit key (default: $CONVSTORE_AUDIT_KEY)")
    checkpoint = add("checkpoint", "export every session's head, signed with the audit key")
    checkpoint.add_argument("-o", "--output", help="write here instead of standard output")
    checkpoint.add_argument("--key-file", help="the audit key (default: $CONVSTORE_AUDIT_KEY)")
    add("verify", "compare the projections with a fold of the log")
    add("replay", "rebuild every projection from the log (refused if the audit fails)")
    export = add("export", "write the log as JSON Lines")
    export.add_argument("--session", help="only this session")
    export.add_argument("-o", "--output", help="write here instead of standard output")
    add("import", "load a JSON Lines export ('-' for standard input)").add_argument("file")
    import_sdk = add("import-sdk", "bring the history of the SDK's own sessions into the log")
    import_sdk.add_argument("source", help="the SDK's database: a SQLite path or a URL")
    import_sdk.add_argument("--sessions-table", default="agent_sessions")
    import_sdk.add_argument("--messages-table", default="agent_messages")
    retention = add("retention", "remove sessions idle for longer than a duration")
    retention.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="e.g. 90d"
    )
    retention.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    add("tree", "the branches of one session, with their fork points").add_argument("session")
    usage = add("usage", "token usage per turn, of a branch and of the whole session")
    usage.add_argument("session")
    usage.add_argument("--branch", help="branch (default: the session's current branch)")
    shred = add("shred", "destroy an encrypted session's data key (crypto-shredding)")
    shred.add_argument("session")
    shred.add_argument("--key-db", help="the key database, if the keys live apart from the log")
    shred.add_argument(
        "--force", action="store_true", help="shred (tombstone) a session that has no key yet"
    )
    _add_serve(add)
    return parser


# -- opening the database ---------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_path(db: str) -> str | None:
    """The file of a SQLite target, or None for a server URL."""
    if "://" not in db:
        return db
    try:
        url = make_url(db)
    except (ArgumentError, ValueError):
        raise UsageError(f"not a database URL: {db}") from None
    return (url.database or ":memory:") if url.get_backend_name() == "sqlite" else None


def check_existing_database(db: str) -> None:
    """Refuse a SQLite path that is not a convstore database, without changing it."""
    path = _sqlite_path(db)
    if path is None or path == ":memory:":
        return
    file = Path(path)
    if not file.exists():
        raise UsageError(f"no database at {path} (create one with 'convstore {db} init')")
    if not file.is_file():
        raise UsageError(f"{path} is not a file")
    with file.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        what = "an empty file" if not head else "not a SQLite database"
        raise UsageError(f"{path} is {what}, not a convstore database")
    uri = file.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'convstore_schema'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise UsageError(f"{path}: {error}") from None
    if found is None:
        raise UsageError(
            f"{path} is a SQLite database but not a convstore one (no convstore tables); "
            f"'convstore {db} init' would add them"
        )


def _open_files(args: argparse.Namespace, stack: ExitStack) -> None:
    """Open the files a command reads or writes, before any database work."""
    try:
        if getattr(args, "against", None):
            args.against_data = Path(args.against).read_bytes()
        if args.command == "import":
            if args.file == "-":
                args.input_file, args.input_events = sys.stdin.buffer, 0
            else:
                args.input_file = stack.enter_context(open(args.file, "rb"))  # noqa: SIM115
                # The progress bar's total: a guess of ~400 bytes an event.
                args.input_events = max(os.path.getsize(args.file) // 400, 1)
        if args.command == "export":
            args.output_file = None
            if args.output:
                args.output_file = stack.enter_context(open(args.output, "wb"))  # noqa: SIM115
    except OSError as error:
        raise UsageError(f"{error.strerror}: {error.filename}") from None


async def run(args: argparse.Namespace) -> int:
    """Run one parsed command; return the exit status."""
    command = COMMANDS[args.command]
    async with admin.open_store(args.db, create=command.creates) as store:
        return await command.run(store, args)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    try:
        args = build_parser().parse_args(argv)
        _sqlite_path(args.db)  # a URL that does not parse is a usage error
        if not COMMANDS[args.command].creates:
            check_existing_database(args.db)
        with ExitStack() as stack:
            _open_files(args, stack)
            code = asyncio.run(run(args))
    except (UsageError, ConvstoreError, InvalidArgumentError) as error:
        code = _fail(str(error))
    except SQLAlchemyError as error:
        code = _fail(f"database error: {error}".splitlines()[0])
    except OSError as error:  # e.g. connection refused before the driver wraps it
        code = _fail(f"cannot reach the database: {error.strerror or error}")
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _fail(message: str) -> int:
    print(f"convstore: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    main()
