"""Honest use audits clean: a web application's pattern, on every shared backend.

Several processes, each with one engine (as a FastAPI worker has), serve requests from
several tasks at once; every request opens a NEW session object for one of three users
(shared by every task of every process: one plain, one Advanced, one encrypted
Advanced) and adds, pops, clears, branches, switches or deletes a branch. Then, through
the command's own functions: ``audit`` exits 0, ``checkpoint`` and ``replay`` succeed,
and export → import (into a new SQLite file) → export gives the same bytes.

Before each append took its session's advisory lock first, this failed on PostgreSQL
(positions out of version order within a session: ``audit`` findings, then
``checkpoint`` and ``replay`` refused and the import stopped at the first session that
skipped a version). ``CONVSTORE_LONG_TESTS=1``: two tries of 4 processes x 6 tasks x
25 requests instead of one of 3 x 4 x 10.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sessions.cli import main

from ..conftest import Backend
from ._figures import record
from ._support import sized

REPO = Path(__file__).resolve().parents[2]


def serve(
    backend: Backend, attempt: int, processes: int, tasks: int, requests: int
) -> Counter[str]:
    """Run the request-serving processes of one try (each its own worker number, so its
    own seeds and branch names); what their calls did, added up."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability._requests",
                backend.name,
                backend.target,
                str(attempt * processes + p),
                str(tasks),
                str(requests),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    done: Counter[str] = Counter()
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            done.update(json.loads(out))
    finally:
        for proc in procs:  # after a failure: end the others and close their pipes
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    return done


def create_tables_as_the_application_does(target: str) -> None:
    """``sessions.create_tables`` in a process of its own, as an application's lifespan
    runs it: this test process may know projections of other tests, which a store made
    here would add to the database (a process keeps every projection it knows)."""
    code = "import asyncio, sys; from sessions import create_tables; "
    code += "asyncio.run(create_tables(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, target], cwd=REPO, check=True, timeout=120)


def command(*argv: str) -> int:
    """``convstore ARGV`` in this process; its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    code = exit_info.value.code
    assert isinstance(code, int)
    return code


def test_requests_on_one_engine_per_process_audit_clean(
    shared_backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = shared_backend.target
    create_tables_as_the_application_does(db)
    tries, processes, tasks, requests = sized(1, 2), sized(3, 4), sized(4, 6), sized(10, 25)
    key = tmp_path / "audit.key"
    key.write_bytes(b"an audit key kept away from the database")
    calls: Counter[str] = Counter()
    for attempt in range(tries):
        calls += serve(shared_backend, attempt, processes, tasks, requests)
        capsys.readouterr()
        audited = command(db, "--json", "audit")
        report = json.loads(capsys.readouterr().out)
        assert audited == 0, report["findings"]
        assert command(db, "checkpoint", "--key-file", str(key), "-o", str(tmp_path / "cp")) == 0
        assert command(db, "audit", "--against", str(tmp_path / "cp"), "--key-file", str(key)) == 0
        assert command(db, "replay") == 0
        first, copy, second = (tmp_path / f"{name}{attempt}" for name in ("a.jsonl", "c.db", "b"))
        assert command(db, "export", "-o", str(first)) == 0
        assert command(str(copy), "import", str(first)) == 0
        assert command(str(copy), "export", "-o", str(second)) == 0
        assert first.read_bytes() == second.read_bytes()
        assert command(str(copy), "audit") == 0
    calls_made = sum(n for kind, n in calls.items() if not kind.startswith("refused"))
    assert all(calls[kind] for kind in ("add", "pop", "clear", "branch", "switch")), calls
    record(
        "requests_audit_clean",
        backend=shared_backend.name,
        tries=tries,
        processes=processes,
        tasks=tasks,
        requests=tries * processes * tasks * requests,
        calls=dict(calls),
        calls_made=calls_made,
        sessions=report["sessions"],
        events=report["events"],
        findings=len(report["findings"]),
    )
