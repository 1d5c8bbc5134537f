"""The command line itself: the parser (each command's options), opening the database
a command names, and running it with one line on standard error for any error."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from .args import Parser, UsageError, parse_as_of, parse_duration, positive
from .commands import COMMANDS
from .output import create_output

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


AddCommand = Callable[[str, str], argparse.ArgumentParser]
"""Adds a subcommand by name and help text and hands back its parser."""


def add_serve(add: AddCommand) -> None:
    from ..viewer.options import add_arguments  # (argparse only: no extra needed)

    add_arguments(add("serve", "a local web viewer: sessions, branches, time travel, usage"))


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the commands' own: :func:`command_parsers`)."""
    return _build()[0]


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, by name (what ``convstore COMMAND --help`` prints)."""
    return _build()[1]


_SESSION_HELP = "the session's id (as 'sessions' lists them)"


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = Parser(
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
    common = Parser(add_help=False)
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
        parser_class=Parser,
        help="what to do (convstore COMMAND --help describes one)",
    )
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help: str) -> argparse.ArgumentParser:
        commands[name] = sub.add_parser(name, parents=[common], help=help, description=help)
        return commands[name]

    add("init", "create the convstore tables (nothing changes where they exist)")
    _add_reading(add)
    _add_integrity(add)
    _add_transfer(add)
    _add_removal(add)
    add_serve(add)
    return parser, commands


def _add_reading(add: AddCommand) -> None:
    """The commands that show a session: sessions, log, history, tree, usage."""
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
    tree = add("tree", "the branches of one session, with their fork points")
    tree.add_argument("session", help=_SESSION_HELP)
    usage = add("usage", "token usage per turn, of a branch and of the whole session")
    usage.add_argument("session", help=_SESSION_HELP)
    usage.add_argument("--branch", help="branch (default: the session's current branch)")


def _add_integrity(add: AddCommand) -> None:
    """The commands that check or rebuild: audit, checkpoint, verify, replay, repair."""
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


def _add_transfer(add: AddCommand) -> None:
    """The commands that move a log in or out: export, import, import-sdk."""
    export = add("export", "write the log as JSON Lines")
    export.add_argument("--session", help="only this session")
    export.add_argument("-o", "--output", help="write here instead of standard output")
    load = add("import", "load a JSON Lines export ('-' for standard input)")
    load.add_argument("file", help="the export file, or - for standard input")
    load.add_argument(
        "--max-line-bytes",
        type=positive,
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


def _add_removal(add: AddCommand) -> None:
    """The commands that remove: retention, shred."""
    retention = add("retention", "remove sessions idle for longer than a duration")
    retention.add_argument(
        "--older-than", type=parse_duration, required=True, metavar="DURATION", help="e.g. 90d"
    )
    retention.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    retention.add_argument(
        "--yes", action="store_true", help="remove without asking (needed off a terminal)"
    )
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
    from ..admin import open_store

    async with open_store(args.db, create=command.creates) as store:
        if not command.imports:
            return await command.run(store, args)
        from ..transfer import CreatedByImport

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
