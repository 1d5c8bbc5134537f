"""Only eventstore writes the log's tables (guarantee 8), checked while the suite runs.

:data:`RECORDER` looks at every statement the test process runs on any database:
through SQLAlchemy (``before_cursor_execute`` on the ``Engine`` class, so every engine,
the sync engine under every ``AsyncEngine`` included), through eventstore's
:class:`~eventstore.prepared.Prepared` statements (run on the DBAPI cursor, which
SQLAlchemy's events do not see), and on every ``sqlite3`` connection (its trace
callback, so raw connections too). An INSERT, UPDATE or DELETE of a log table is
attributed to the innermost frame of the repository's own code that led to it
(statement executors that run what their caller hands them, eventstore/prepared.py,
are passed over): one in projections/ or sessions/ is a violation, one in eventstore/
is the store's own, and one in tests/ (a test tampering with the log on purpose),
benchmarks/ or examples/ is not judged. tests/conftest.py fails the run at its end if
any violation was recorded, naming the module, the line, the statement and the test.

Projections write their own tables inside the append transaction; only the log's
tables are guarded. Child processes a test starts are not watched.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from eventstore import prepared

ROOT = Path(__file__).resolve().parents[1]
LOG_TABLES = frozenset(
    {
        "convstore_events",
        "convstore_streams",
        "convstore_head",
        "convstore_schema",
        "convstore_tracking",
        "convstore_tombstones",
    }
)
# The write and its table; a statement is looked at up to this many characters (the
# table follows its verb early on; a row's values may be long).
_WRITE = re.compile(
    r"\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+[`\"]?(convstore_\w+)",
    re.IGNORECASE,
)
_LOOKED_AT = 4096
_JUDGED = {"eventstore": True, "projections": False, "sessions": False}
_NOT_JUDGED = frozenset({"tests", "benchmarks", "examples", "tools"})
_PASS_THROUGH = frozenset({str(ROOT / "eventstore" / "prepared.py"), str(Path(__file__).resolve())})


@dataclass(frozen=True)
class Violation:
    """A write to a log table from outside eventstore."""

    module: str  # path from the repository's root
    line: int
    statement: str
    test: str  # the test that was running

    def __str__(self) -> str:
        statement = " ".join(self.statement.split())[:200]
        return f"{self.module}:{self.line} wrote a log table ({statement}) in {self.test}"


class Recorder:
    """Collects the violations of every statement it is shown (see the module)."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.current_test = ""
        self._lock = threading.Lock()
        self._root = str(ROOT) + os.sep

    def seen(self, statement: str) -> None:
        """Look at one statement about to run (called on the thread that runs it)."""
        if "convstore_" not in statement:
            return
        tables = _WRITE.findall(statement[:_LOOKED_AT])
        if not any(table.lower() in LOG_TABLES for table in tables):
            return
        frame = sys._getframe(1)
        while frame is not None:
            path = frame.f_code.co_filename
            if path.startswith(self._root) and path not in _PASS_THROUGH:
                top = path[len(self._root) :].split(os.sep, 1)[0]
                if top in _NOT_JUDGED:
                    return
                if top in _JUDGED:
                    if not _JUDGED[top]:
                        self._record(path, frame.f_lineno, statement)
                    return
            frame = frame.f_back  # type: ignore[assignment]

    def _record(self, path: str, line: int, statement: str) -> None:
        module = path[len(self._root) :]
        with self._lock:
            self.violations.append(Violation(module, line, statement, self.current_test))

    def install(self) -> None:
        """Watch every statement of this process from now on."""
        event.listen(Engine, "before_cursor_execute", self._before_cursor_execute)
        run_on_cursor = prepared._call

        def traced_call(conn: Any, sql: str, params: Any, *, many: bool) -> Any:
            self.seen(sql)
            return run_on_cursor(conn, sql, params, many=many)

        prepared._call = traced_call
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect

        def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            conn.set_trace_callback(self.seen)
            return conn

        sqlite3.connect = traced_connect

    def _before_cursor_execute(
        self, conn: Any, cursor: Any, statement: str, *args: Any, **kwargs: Any
    ) -> None:
        self.seen(statement)


RECORDER = Recorder()
