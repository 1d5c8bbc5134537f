"""``convstore DB COMMAND``: look into and maintain a conversation store from the shell.

DB is a SQLite path or a SQLAlchemy URL. Output is a readable table by default and
JSON with ``--json`` (before or after the command). Exit status: 0 on success, 1 when
a check finds problems (audit, verify, a refused replay) or import-sdk skipped rows,
2 on an error (bad arguments, unreachable database, missing file or tables, unknown
session), always with one line on standard error.

Commands that only read never create or change a file: a SQLite path must already
be a convstore database. ``init``, ``import`` and ``import-sdk`` create the tables;
an import that fails removes a database it created (nothing was imported into it).

The command lives in ``sessions`` (not ``eventstore``) because its commands read
projections, and dependencies only flow ``sessions -> projections -> eventstore``.
It never imports the Agents SDK, and imports SQLAlchemy and the event store only once
the arguments are parsed, so ``--help``, ``--version`` and argument errors are quick
(``benchmarks/cli_startup.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack, redirect_stdout
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType

from ._progress import ProgressBar

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for --version
if TYPE_CHECKING:
    from typing import Any, BinaryIO, NoReturn, TextIO

    from eventstore import AuditReport, EventStore, RecordedEvent

    from . import admin


def _lazy(name: str) -> ModuleType:
    """The module ``name``, executed on first use of one of its attributes (the Python
    documentation's LazyLoader recipe): the commands' modules load SQLAlchemy and the
    event store, which ``--help`` and ``--version`` never need."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None, name
    assert spec.loader is not None, name
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if not TYPE_CHECKING:
    admin = _lazy("sessions.admin")

EXAMPLES = """\
examples:
  convstore chat.db init                       create the tables
  convstore chat.db sessions                   every session, with sizes and times
  convstore chat.db log user_123               the events of a session (versions, hashes)
  convstore chat.db history user_123 --as-of 4 the items as they were at version 4
  convstore chat.db audit                      check the chain and projections (exit 1 on findings)
  convstore chat.db repair --dry-run           sessions whose positions do not follow versions
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

exit status: 0 ok, 1 findings (or import-sdk skipped rows), 2 error (one line on standard error)
"""


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'convstore -h')")


# -- output -------------------------------------------------------------------------


def _emit_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# The longest details column ``log`` prints (``--full``: all of it).
DETAILS_WIDTH = 72


def _summary(recorded: RecordedEvent, *, full: bool = False) -> str:
    """What one event did, in a line of at most DETAILS_WIDTH characters (``full``:
    every field of the event)."""
    import msgspec

    from eventstore import ItemPopped, ItemsAdded, UsageRecorded
    from projections.history import MAX_ITEMS_PER_EVENT

    event = recorded.event
    if isinstance(event, ItemsAdded):
        return f"{len(event.items)} item(s) on {event.branch_id}"
    if isinstance(event, ItemPopped):
        version, index = divmod(event.seq, MAX_ITEMS_PER_EVENT)
        return f"removed item {index + 1} of v{version} on {event.branch_id}"
    fields = msgspec.structs.asdict(event)
    text = ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, {}, ()))
    if full:
        return text
    if isinstance(event, UsageRecorded):
        text = (
            f"{event.requests} request(s), {event.input_tokens:,} in + "
            f"{event.output_tokens:,} out = {event.total_tokens:,} tokens on {event.branch_id}"
            + ("" if event.anchor_branch else " (session only)")
        )
    return text if len(text) <= DETAILS_WIDTH else text[: DETAILS_WIDTH - 3] + "..."


# The key of an encrypted item's envelope (sessions/_envelope.py).
_SEALED = "__convstore_encrypted__"


def _item_text(item: Any) -> str:
    if isinstance(item, dict) and _SEALED in item:
        size = len(str(item.get("ct", "")))
        who = item.get("role") or "item"
        return f"{who}: [encrypted, {size:,} characters of ciphertext; --key-file decrypts]"
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


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _read_master_key(path: str) -> str | bytes:
    """The master key kept in a file: its text as the application passes it (a
    passphrase or URL-safe base64; a final newline is not part of it), or 32 raw bytes
    when the file is not UTF-8 text."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the key file: {error.strerror}: {path}") from None
    try:
        key: str | bytes = data.decode().removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        key = data
    if not key:
        raise UsageError(f"the key file {path} is empty")
    return key


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
    from projections.usage_table import USAGE

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
    from eventstore import decode_item

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
                    "event": decode_item(e.payload),
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
                    _summary(e, full=args.full),
                    e.hash[:12],
                )
                for e in events
            ],
        )
    return 0


async def _history(store: EventStore, args: argparse.Namespace) -> int:
    items = await admin.session_history(store, args.session, branch=args.branch, as_of=args.as_of)
    if args.key_file:
        key = _read_master_key(args.key_file)
        items = await admin.decrypt_items(
            store, args.session, items, key, key_store=args.key_db or None
        )
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
    from eventstore import InvalidArgumentError

    from . import _keys
    from ._maintenance import ensure_key_tables, open_store, shred_session

    _check_consent(args)
    info = await store.stream_info(args.session)
    if info is None:
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
    pending = row is None or row.wrapped is not None  # False: shredded already
    what = (
        f"destroy the data key of {args.session!r} ({info.version:,} event(s)): its items "
        "can never be decrypted again, with any key"
        if row is not None
        else f"mark {args.session!r} as shredded: it can never be encrypted under this id"
    )
    if args.dry_run:
        if args.json:
            _emit_json({"session": args.session, "dry_run": True, "would_shred": pending})
        else:
            print(
                f"would {what}"
                if pending
                else f"the data key of {args.session!r} was destroyed already: nothing would change"
            )
        return 0
    if pending and not await _confirm(args, f"This will {what}."):
        return _declined()
    shredded = await shred_session(store, args.session, key_store=args.key_db)
    if args.json:
        _emit_json({"session": args.session, "shredded": shredded})
    elif shredded:
        print(f"destroyed the data key of {args.session!r}: its items cannot be read any more")
    else:
        print(f"the data key of {args.session!r} was destroyed already")
    return 0


# -- consent of destructive commands ------------------------------------------------


def _check_consent(args: argparse.Namespace) -> None:
    """A command that deletes runs with --yes, or --dry-run, or on a terminal (where it
    asks); anywhere else it refuses before it reads anything (exit 2)."""
    if args.yes or args.dry_run or sys.stdin.isatty():
        return
    raise UsageError(
        f"'{args.command}' deletes data and standard input is not a terminal to confirm "
        "it: pass --yes to go ahead (--dry-run lists what would go)"
    )


async def _confirm(args: argparse.Namespace, what: str) -> bool:
    """--yes, or the answer typed at the terminal (y or yes) after ``what`` was shown."""
    if args.yes:
        return True
    sys.stderr.write(f"{what}\nGo ahead? [y/N] ")
    sys.stderr.flush()
    import asyncio

    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


def _declined() -> int:
    print("convstore: nothing was changed", file=sys.stderr)
    return 1


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
        from eventstore.checkpoints import load_checkpoints

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
        _emit_json(
            {
                "ok": report.ok,
                "events": report.events_replayed,
                "differences": [str(d) for d in report.differences],
            }
        )
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


# The mode of the files the command creates (exports, checkpoints): readable by their
# owner only, as the SQLite databases are. An existing file keeps its mode.
OUTPUT_MODE = 0o600


def create_output(path: str) -> BinaryIO:
    """``path`` opened for writing, created with :data:`OUTPUT_MODE` if it is new."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OUTPUT_MODE)
    return os.fdopen(fd, "wb")


async def _repair(store: EventStore, args: argparse.Namespace) -> int:
    report = await admin.repair(store, dry_run=args.dry_run)
    if args.json:
        _emit_json(
            {
                "dry_run": report.dry_run,
                "sessions": [
                    {
                        "session": s.stream_id,
                        "events": s.events,
                        "moved": s.moved,
                        "first_position": s.first_position,
                    }
                    for s in report.streams
                ],
                "projections_reset": list(report.projections_reset),
            }
        )
        return 0
    if not report.streams:
        print("every session's positions follow its versions: nothing to repair")
        return 0
    _table(
        ["session", "events", "moved", "from position"],
        [(s.stream_id, s.events, s.moved, s.first_position) for s in report.streams],
    )
    for name in report.projections_reset:
        print(f"projection {name} was catching up past a moved position: it replays from the start")
    verb = "would renumber" if args.dry_run else "renumbered"
    print(
        f"{verb} {report.moved:,} event(s) in {len(report.streams):,} session(s) "
        "(positions only: hashes, versions and payloads unchanged)"
    )
    return 0


def _write_output(path: str | None, data: bytes) -> None:
    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with create_output(path) as out:
            out.write(data)


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
    from .transfer import MAX_LINE_BYTES, import_events

    source: BinaryIO = args.input_file
    bar = ProgressBar(args.input_events, "importing")
    try:
        result = await import_events(
            store, source, progress=bar.update, max_line_bytes=args.max_line_bytes or MAX_LINE_BYTES
        )
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
    # Exit 1 when rows or sessions were skipped: the rest is imported, but not all.
    code = 1 if result.skipped else 0
    if args.json:
        import dataclasses

        fields = dataclasses.asdict(result)
        fields["refused"] = [
            {
                "session": r.session_id,
                "row": r.row,
                "error": type(r.error).__name__,
                "reason": str(r.error),
            }
            for r in result.refused
        ]
        _emit_json(fields)
        return code
    for note in result.notes:
        print(f"note: {note}")
    summary = (
        f"imported {result.items:,} item(s), {result.branches:,} branch(es) and "
        f"{result.usage:,} usage record(s) into {result.sessions:,} session(s); "
        f"{result.up_to_date:,} session(s) already up to date"
    )
    if result.skipped:
        summary += (
            f"; skipped {result.skipped_rows:,} row(s) and {result.skipped_sessions:,} "
            "session(s) (see the notes above)"
        )
    print(summary)
    return code


async def _retention(store: EventStore, args: argparse.Namespace) -> int:
    _check_consent(args)
    # One moment for the listing and the removal: only sessions shown can go (one
    # written to in between is kept).
    now = datetime.now(UTC)
    idle = await admin.retention(store, args.older_than, dry_run=True, now=now)
    removed = idle
    if not args.dry_run:
        if idle and not args.yes:
            _sessions_table(idle, sys.stderr)
            question = (
                f"This will remove these {len(idle)} session(s), idle for longer than "
                f"{format_duration(args.older_than)}: their events and projection rows "
                "(a tombstone stays)."
            )
            if not await _confirm(args, question):
                return _declined()
        removed = await admin.retention(store, args.older_than, now=now) if idle else []
    if args.json:
        _emit_json({"dry_run": args.dry_run, "sessions": removed})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    _sessions_table(removed, sys.stdout)
    print(
        f"{verb} {len(removed)} session(s) idle for longer than {format_duration(args.older_than)}"
    )
    return 0


def _sessions_table(sessions: Sequence[admin.RemovedSession], stream: TextIO) -> None:
    with redirect_stdout(stream):
        _table(
            ["session", "events", "last written (UTC)"],
            [(r.session_id, r.version, _when(r.updated_at)) for r in sessions],
        )


# -- serve: the web viewer (sessions/viewer) ------------------------------------------


async def _serve(store: EventStore, args: argparse.Namespace) -> int:
    from .viewer.serve import serve

    return await serve(store, args)


def _add_serve(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    from .viewer.options import add_arguments  # (argparse only: no extra needed)

    add_arguments(add("serve", "a local web viewer: sessions, branches, time travel, usage"))


class Command:
    """A command: what runs it, whether it may create the database and its tables, and
    whether it imports (a failure removes the database it created, if nothing came of
    it). A plain class: the dataclasses module would cost ``--version`` its import."""

    __slots__ = ("creates", "imports", "run")

    def __init__(
        self,
        run: Callable[[EventStore, argparse.Namespace], Awaitable[int]],
        *,
        creates: bool = False,
        imports: bool = False,
    ) -> None:
        self.run = run
        self.creates = creates
        self.imports = imports


COMMANDS = {
    "init": Command(_init, creates=True),
    "sessions": Command(_sessions),
    "log": Command(_log),
    "history": Command(_history),
    "audit": Command(_audit),
    "checkpoint": Command(_checkpoint),
    "verify": Command(_verify),
    "replay": Command(_replay),
    "repair": Command(_repair),
    "export": Command(_export),
    "import": Command(_import, creates=True, imports=True),
    "import-sdk": Command(_import_sdk, creates=True, imports=True),
    "retention": Command(_retention),
    "tree": Command(_tree),
    "usage": Command(_usage),
    "shred": Command(_shred),
    "serve": Command(_serve),
}


def _version() -> str:
    """The installed version, from the first ``convstore-*.dist-info`` on ``sys.path``
    (where importlib.metadata looks, without the cost of importing it)."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("convstore-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry or ".", name, "METADATA")) as f:
                        for line in f:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                except OSError:
                    continue
    return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the commands' own: :func:`command_parsers`)."""
    return _build()[0]


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, by name (what ``convstore COMMAND --help`` prints)."""
    return _build()[1]


_SESSION_HELP = "the session's id (as 'sessions' lists them)"


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog="convstore",
        description="Inspect and maintain a convstore database (SQLite path or SQLAlchemy URL).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convstore {_version()}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "db", metavar="DB", help="SQLite file or database URL, e.g. postgresql://user@host/db"
    )
    common = _Parser(add_help=False)
    # SUPPRESS: a --json given before the command is not reset by the subparser.
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of a table (also before the command)",
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=_Parser,
        help="what to do (convstore COMMAND --help describes one)",
    )
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help: str) -> argparse.ArgumentParser:
        commands[name] = sub.add_parser(name, parents=[common], help=help, description=help)
        return commands[name]

    add("init", "create the convstore tables (nothing changes where they exist)")
    add("sessions", "list sessions")
    log = add("log", "the events of one session")
    log.add_argument("session", help=_SESSION_HELP)
    log.add_argument(
        "--full", action="store_true", help="every field of each event, however long the line"
    )
    history = add("history", "the items of one session, now or as of a version or time")
    history.add_argument("session", help=_SESSION_HELP)
    history.add_argument("--branch", default="main", help="branch (default: main)")
    history.add_argument(
        "--as-of", type=parse_as_of, metavar="V|TIME", help="a version, or an ISO 8601 time"
    )
    history.add_argument(
        "--key-file",
        metavar="K",
        help="the master key of an encrypted session (a file of one line): show its items "
        "decrypted",
    )
    history.add_argument(
        "--key-db", help="the key database, if the keys live apart from the log (with --key-file)"
    )
    audit = add("audit", "check the hash chains, versions, positions and projections")
    audit.add_argument("--against", metavar="CHECKPOINTS", help="a file made by 'checkpoint'")
    audit.add_argument("--key-file", help="the audit key (default: $CONVSTORE_AUDIT_KEY)")
    checkpoint = add("checkpoint", "export every session's head, signed with the audit key")
    checkpoint.add_argument("-o", "--output", help="write here instead of standard output")
    checkpoint.add_argument("--key-file", help="the audit key (default: $CONVSTORE_AUDIT_KEY)")
    add("verify", "compare the projections with a fold of the log")
    add("replay", "rebuild every projection from the log (refused if the audit fails)")
    repair = add("repair", "renumber positions that do not follow versions (hashes untouched)")
    repair.add_argument("--dry-run", action="store_true", help="list the sessions, change nothing")
    export = add("export", "write the log as JSON Lines")
    export.add_argument("--session", help="only this session")
    export.add_argument("-o", "--output", help="write here instead of standard output")
    load = add("import", "load a JSON Lines export ('-' for standard input)")
    load.add_argument("file", help="the export file, or - for standard input")
    load.add_argument(
        "--max-line-bytes",
        type=_positive,
        metavar="N",
        help="refuse a line (one event) longer than N bytes (default: 67108864, 64 MiB)",
    )
    import_sdk = add("import-sdk", "bring the history of the SDK's own sessions into the log")
    import_sdk.add_argument("source", help="the SDK's database: a SQLite path or a URL")
    import_sdk.add_argument(
        "--sessions-table",
        default="agent_sessions",
        metavar="T",
        help="the SDK's sessions table (default: agent_sessions)",
    )
    import_sdk.add_argument(
        "--messages-table",
        default="agent_messages",
        metavar="T",
        help="the SDK's messages table (default: agent_messages)",
    )
    retention = add("retention", "remove sessions idle for longer than a duration")
    retention.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="e.g. 90d"
    )
    retention.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    retention.add_argument(
        "--yes", action="store_true", help="remove without asking (needed off a terminal)"
    )
    tree = add("tree", "the branches of one session, with their fork points")
    tree.add_argument("session", help=_SESSION_HELP)
    usage = add("usage", "token usage per turn, of a branch and of the whole session")
    usage.add_argument("session", help=_SESSION_HELP)
    usage.add_argument("--branch", help="branch (default: the session's current branch)")
    shred = add("shred", "destroy an encrypted session's data key (crypto-shredding)")
    shred.add_argument("session", help=_SESSION_HELP)
    shred.add_argument("--key-db", help="the key database, if the keys live apart from the log")
    shred.add_argument(
        "--force", action="store_true", help="shred (tombstone) a session that has no key yet"
    )
    shred.add_argument(
        "--dry-run", action="store_true", help="say what would happen, change nothing"
    )
    shred.add_argument(
        "--yes", action="store_true", help="shred without asking (needed off a terminal)"
    )
    _add_serve(add)
    return parser, commands


# -- opening the database ---------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_path(db: str) -> str | None:
    """The file of a SQLite target, or None for a server URL."""
    if "://" not in db:
        return db
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

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
    import sqlite3

    from eventstore.schema import schema_versions

    uri = file.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (schema_versions.name,),
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
                new = not os.path.exists(args.output)
                args.output_file = stack.enter_context(create_output(args.output))
                if new:  # a failed export leaves no file behind
                    stack.push(partial(_remove_if_failed, Path(args.output)))
    except OSError as error:
        raise UsageError(f"{error.strerror}: {error.filename}") from None


def _remove_if_failed(path: Path, failed: type[BaseException] | None, *_: object) -> bool:
    if failed is not None:
        path.unlink(missing_ok=True)
    return False


async def run(args: argparse.Namespace) -> int:
    """Run one parsed command; return the exit status."""
    command = COMMANDS[args.command]
    async with admin.open_store(args.db, create=command.creates) as store:
        if not command.imports:
            return await command.run(store, args)
        from .transfer import CreatedByImport

        created = await CreatedByImport.survey(store, _sqlite_path(args.db))
        try:
            return await command.run(store, args)
        except Exception:
            await created.undo(store)  # a failed import leaves no empty database behind
            raise


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words == ["--version"]:  # what the parser would print, without building it
        print(f"convstore {_version()}")
        sys.exit(0)
    parser, commands = _build()
    asked = _help_asked(words, commands)
    if asked is not None:  # convstore COMMAND --help: no database needed
        commands[asked].print_help()
        sys.exit(0)
    try:
        args = parser.parse_args(words)
    except UsageError as error:
        sys.exit(_fail(str(error)))
    sys.exit(_main(args))


def _help_asked(words: Sequence[str], commands: Mapping[str, object]) -> str | None:
    """The command of ``convstore COMMAND ... --help`` (the database left out): its first
    word is a command and its second is not (``convstore log log -h`` is the help of
    ``log`` on a database named ``log``)."""
    if "-h" not in words and "--help" not in words:
        return None
    plain = [w for w in words if not w.startswith("-")]
    if plain and plain[0] in commands and (len(plain) < 2 or plain[1] not in commands):
        return plain[0]
    return None


def _main(args: argparse.Namespace) -> int:
    """Run the parsed command; the exit status (errors: one line on standard error)."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from eventstore import ConvstoreError, InvalidArgumentError

    try:
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
    return code


def _fail(message: str) -> int:
    print(f"convstore: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    main()
