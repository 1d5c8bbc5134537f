"""The commands: each reads its arguments, calls the Python function behind it
(:mod:`sessions.admin`, :mod:`sessions.transfer`, :mod:`sessions.sdk_import`, the
crypto key ring, the viewer) and prints the result as a table or as JSON.

The modules behind the commands load SQLAlchemy and the event store, so they are
imported on first use: ``--help`` and ``--version`` never need them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import redirect_stdout
from datetime import UTC, datetime
from types import ModuleType

from .args import (
    audit_key,
    check_consent,
    confirm,
    declined,
    format_duration,
    read_master_key,
)
from .output import compaction_text, emit_json, item_text, summary, table, when, write_output
from .progress import ProgressBar

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for --version
if TYPE_CHECKING:
    from typing import BinaryIO, TextIO

    from eventstore import AuditReport, EventStore

    from .. import admin


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


if not TYPE_CHECKING:
    admin = _lazy("sessions.admin")


# -- commands -------------------------------------------------------------------


async def _init(store: EventStore, args: argparse.Namespace) -> int:
    # Every projection a session class keeps (admin.init_database): an Advanced
    # session opened with create_tables=False then finds its usage tables too.
    from projections.usage_table import USAGE

    store.keep([USAGE])
    await store.ensure_tables()
    if args.json:
        emit_json({"initialised": True})
    else:
        print("the convstore tables are ready")
    return 0


async def _sessions(store: EventStore, args: argparse.Namespace) -> int:
    found = await admin.list_sessions(store)
    if args.json:
        emit_json(found)
    else:
        table(
            ["session", "events", "items", "created (UTC)", "updated (UTC)"],
            [
                (s.session_id, s.version, s.items, when(s.created_at), when(s.updated_at))
                for s in found
            ],
        )
    return 0


async def _log(store: EventStore, args: argparse.Namespace) -> int:
    from eventstore import decode_item

    events = await admin.session_log(store, args.session)
    if args.json:
        emit_json(
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
        table(
            ["ver", "pos", "recorded (UTC)", "event", "details", "hash"],
            [
                (
                    e.version,
                    e.position,
                    f"{e.recorded_at:%Y-%m-%d %H:%M:%S.%f}",
                    e.event_type,
                    summary(e, full=args.full),
                    e.hash[:12],
                )
                for e in events
            ],
        )
    return 0


async def _history(store: EventStore, args: argparse.Namespace) -> int:
    items = await admin.session_history(store, args.session, branch=args.branch, as_of=args.as_of)
    compacted = (await admin.compactions_by_branch(store, args.session)).get(args.branch, [])
    if args.key_file:
        key = read_master_key(args.key_file)
        items = await admin.decrypt_items(
            store, args.session, items, key, key_store=args.key_db or None
        )
    if args.json:
        emit_json(items)
        return 0
    table(["#", "item"], [(n, item_text(item)) for n, item in enumerate(items, 1)])
    if isinstance(args.as_of, int):
        compacted = [e for e in compacted if e.version <= args.as_of]
    elif args.as_of is not None:
        compacted = [e for e in compacted if e.recorded_at <= args.as_of]
    if compacted:
        last = compacted[-1]
        print(
            f"(v{last.version}: {compaction_text(last.event)}; the log keeps every item: "
            f"--as-of {last.version - 1} shows the history before it)"
        )
    return 0


async def _tree(store: EventStore, args: argparse.Namespace) -> int:
    nodes = await admin.session_tree(store, args.session)
    if args.json:
        emit_json(nodes)
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
        compacted = f", compacted {node.compactions} time(s)" if node.compactions else ""
        print(
            f"{lead}{node.branch_id}{current}  {node.items} item(s), "
            f"{node.user_turns} turn(s){compacted}{where}"
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
    from ..usage import render_usage, usage_report

    stats = await usage_report(store, args.session, branch=args.branch)
    if args.json:
        emit_json(stats.to_dict())
    else:
        print(render_usage(stats))
    return 0


async def _shred(store: EventStore, args: argparse.Namespace) -> int:
    from eventstore import InvalidArgumentError

    from ..crypto.keyring import ensure_key_tables, open_store, shred_session
    from ..crypto.tables import read_data_key_tx

    check_consent(args)
    info = await store.stream_info(args.session)
    if info is None:
        raise admin.NotFoundError(f"no session {args.session!r} in this database")
    keys, owned = open_store(args.key_db) if args.key_db else (store, False)
    try:
        await ensure_key_tables(keys)
        row = await keys.run(lambda conn: read_data_key_tx(conn, args.session))
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
            emit_json({"session": args.session, "dry_run": True, "would_shred": pending})
        else:
            print(
                f"would {what}"
                if pending
                else f"the data key of {args.session!r} was destroyed already: nothing would change"
            )
        return 0
    if pending and not await confirm(args, f"This will {what}."):
        return declined()
    shredded = await shred_session(store, args.session, key_store=args.key_db)
    if args.json:
        emit_json({"session": args.session, "shredded": shredded})
    elif shredded:
        print(f"destroyed the data key of {args.session!r}: its items cannot be read any more")
    else:
        print(f"the data key of {args.session!r} was destroyed already")
    return 0


def _report_findings(report: AuditReport, args: argparse.Namespace) -> int:
    if args.json:
        emit_json(
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

        checkpoints = load_checkpoints(args.against_data, key=audit_key(args))
    bar = ProgressBar(await store.count_events(), "auditing")
    report = await admin.audit_database(store, checkpoints=checkpoints, progress=bar.update)
    bar.close()
    return _report_findings(report, args)


async def _checkpoint(store: EventStore, args: argparse.Namespace) -> int:
    data = await admin.take_checkpoints(store, key=audit_key(args))
    write_output(args.output, data)
    if args.output:
        lines = data.count(b"\n") - 2
        print(f"checkpoints of {lines:,} session(s) written to {args.output}", file=sys.stderr)
    return 0


async def _verify(store: EventStore, args: argparse.Namespace) -> int:
    bar = ProgressBar(await store.count_events(), "verifying")
    report = await admin.verify_projections(store, progress=bar.update)
    bar.close()
    if args.json:
        emit_json(
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
        emit_json({"replayed_to_position": replayed})
    else:
        print(f"rebuilt every projection from the log (up to position {replayed:,})")
    return 0


async def _repair(store: EventStore, args: argparse.Namespace) -> int:
    report = await admin.repair(store, dry_run=args.dry_run)
    if args.json:
        emit_json(
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
    table(
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


async def _export(store: EventStore, args: argparse.Namespace) -> int:
    from ..transfer import export_events

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
    from ..transfer import MAX_LINE_BYTES, import_events

    source: BinaryIO = args.input_file
    bar = ProgressBar(args.input_events, "importing")
    try:
        result = await import_events(
            store, source, progress=bar.update, max_line_bytes=args.max_line_bytes or MAX_LINE_BYTES
        )
    finally:
        bar.close()
    if args.json:
        emit_json(result)
    else:
        print(
            f"imported {result.imported:,} event(s) of {result.sessions:,} session(s); "
            f"{result.skipped:,} already there"
        )
    return 0


async def _import_sdk(store: EventStore, args: argparse.Namespace) -> int:
    from ..sdk_import import import_sdk

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
        emit_json(fields)
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
    check_consent(args)
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
            if not await confirm(args, question):
                return declined()
        removed = await admin.retention(store, args.older_than, now=now) if idle else []
    if args.json:
        emit_json({"dry_run": args.dry_run, "sessions": removed})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    _sessions_table(removed, sys.stdout)
    print(
        f"{verb} {len(removed)} session(s) idle for longer than {format_duration(args.older_than)}"
    )
    return 0


def _sessions_table(sessions: Sequence[admin.RemovedSession], stream: TextIO) -> None:
    with redirect_stdout(stream):
        table(
            ["session", "events", "last written (UTC)"],
            [(r.session_id, r.version, when(r.updated_at)) for r in sessions],
        )


# -- serve: the web viewer (sessions/viewer) ------------------------------------------


async def _serve(store: EventStore, args: argparse.Namespace) -> int:
    from ..viewer.serve import serve

    return await serve(store, args)


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
