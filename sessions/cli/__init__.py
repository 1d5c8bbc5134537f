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

The rooms: :mod:`.main` (the parser, opening the database, running a command),
:mod:`.commands` (each command), :mod:`.args` (argument types and consent),
:mod:`.output` (tables, JSON, files) and :mod:`.progress` (the progress bar). Each
command is also a Python function, in :mod:`sessions.admin`, :mod:`sessions.transfer`
and :mod:`sessions.sdk_import`.
"""

from .args import UsageError, format_duration, parse_as_of, parse_duration
from .commands import COMMANDS, Command
from .main import build_parser, check_existing_database, command_parsers, main, run

__all__ = [
    "COMMANDS",
    "Command",
    "UsageError",
    "build_parser",
    "check_existing_database",
    "command_parsers",
    "format_duration",
    "main",
    "parse_as_of",
    "parse_duration",
    "run",
]
