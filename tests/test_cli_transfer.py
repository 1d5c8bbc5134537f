"""The convstore command's export, import and import-sdk: what they promise on hostile
and real data (exit codes, summaries, files they create or leave alone)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from .test_cli import run
from .test_sdk_import import write_advanced_file, write_hostile_rows, write_sdk_file


def test_import_sdk_into_a_fresh_database_then_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "advanced.db"
    asyncio.run(write_advanced_file(source))
    target = str(tmp_path / "new.db")
    code, out, err = run(capsys, target, "import-sdk", str(source))
    assert (code, err) == (0, "")
    assert "5 usage record(s) into 1 session(s)" in out
    code, out, err = run(capsys, target, "usage", "carol", "--branch", "main")
    assert code == 0, err
    assert out.splitlines()[1].startswith("turn 1 ")
    assert "branch main (3 turns)" in out


def test_import_sdk_skips_hostile_rows_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sdk.db"
    asyncio.run(write_sdk_file(source))
    write_hostile_rows(source)
    target = str(tmp_path / "new.db")
    code, out, err = run(capsys, target, "import-sdk", str(source))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert sum(line.startswith("note: ") for line in lines) == 7
    assert "nested more than 256 levels deep" in out
    assert lines[-1] == (
        "imported 6 item(s), 0 branch(es) and 0 usage record(s) into 3 session(s); "
        "0 session(s) already up to date; skipped 5 row(s) and 2 session(s) "
        "(see the notes above)"
    )
    code, out, _ = run(capsys, target, "--json", "import-sdk", str(source))
    found = json.loads(out)
    assert (code, found["skipped_rows"], found["skipped_sessions"]) == (1, 5, 2)
    assert {r["error"] for r in found["refused"]} == {"InvalidArgumentError", "SerializationError"}
    assert run(capsys, target, "audit")[0] == 0


# -- import: repeated lines, conflicts, the line bound, nothing left behind -----------


@pytest.fixture
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[bytes]:
    """The lines of an export of a small database (alice: 4 events, bob: 2)."""
    db = str(tmp_path / "source.db")
    asyncio.run(_fill(db))
    out = tmp_path / "source.jsonl"
    assert run(capsys, db, "export", "-o", str(out))[0] == 0
    return out.read_bytes().splitlines(keepends=True)


async def _fill(db: str) -> None:
    from sessions.admin import open_store

    from .test_cli import fill

    async with open_store(db, create=True) as store:
        await fill(store)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _changed(line: bytes) -> bytes:
    event = json.loads(line)
    event["recorded_at"] += 1
    return json.dumps(event).encode() + b"\n"


def test_import_takes_a_repeated_line_and_explains_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: list[bytes]
) -> None:
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(b"".join(exported * 2))
    code, out, err = run(capsys, str(tmp_path / "copy.db"), "import", str(twice))
    assert (code, out, err) == (0, "imported 6 event(s) of 2 session(s); 6 already there\n", "")
    conflict = tmp_path / "conflict.jsonl"
    conflict.write_bytes(b"".join([*exported, _changed(exported[1])]))
    code, out, err = run(capsys, str(tmp_path / "copy.db"), "import", str(conflict))
    assert code == 2
    assert err.startswith(
        "convstore: line 7: session 'alice' v2: the line names the database's event there"
    )


def test_a_failed_import_leaves_no_new_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    exported: list[bytes],
) -> None:
    target = tmp_path / "new.db"
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join([*exported, b"not json\n"]))
    # Refused by the reading before anything is written (a file), on the first line
    # of a batch (standard input), and in the first batch's transaction (a repeat that
    # conflicts with its first line, after the tables were created).
    code, _, err = run(capsys, str(target), "import", str(bad))
    assert (code, err) == (
        2,
        "convstore: line 7: not an exported event: JSON is malformed: invalid character (byte 4)\n",
    )
    _stdin(monkeypatch, b"not json\n")
    assert run(capsys, str(target), "import", "-")[0] == 2
    _stdin(monkeypatch, b"".join([*exported, _changed(exported[1])]))
    code, _, err = run(capsys, str(target), "import", "-")
    assert (code, "line 2 of the file has another event" in err) == (2, True)
    assert sorted(tmp_path.glob("new.db*")) == []
    long_line = tmp_path / "long.jsonl"
    long_line.write_bytes(b"".join(exported))
    code, _, err = run(capsys, str(target), "import", str(long_line), "--max-line-bytes", "100")
    assert (code, "line 1 is longer than 100 bytes" in err, target.exists()) == (2, True, False)
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, str(target), "import-sdk", str(missing))
    assert (code, "no SQLite database" in err, target.exists()) == (2, True, False)


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_a_failed_import_leaves_no_tables_in_a_fresh_server_database(
    server: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    exported: list[bytes],
) -> None:
    from .conftest import reset_server_database, server_url

    url = server_url(server)
    asyncio.run(reset_server_database(url))
    _stdin(monkeypatch, b"".join([*exported, _changed(exported[1])]))
    code, _, err = run(capsys, url, "import", "-")
    assert (code, "line 2 of the file has another event" in err) == (2, True)
    assert asyncio.run(_convstore_tables(url)) == []


async def _convstore_tables(url: str) -> list[str]:
    from sqlalchemy import inspect

    from eventstore import EventStore

    store = EventStore(url, create_tables=False)
    try:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await store.close()
    return [n for n in names if n.startswith("convstore_")]


# -- files the command creates ---------------------------------------------------------


def test_files_the_command_creates_are_its_owners_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)  # the usual umask: it would give 0644
    try:
        db = tmp_path / "db.sqlite"
        asyncio.run(_fill(str(db)))
        exported = tmp_path / "export.jsonl"
        assert run(capsys, str(db), "export", "-o", str(exported))[0] == 0
        heads = tmp_path / "heads.jsonl"
        assert run(capsys, str(db), "checkpoint", "-o", str(heads))[0] == 0
        copy = tmp_path / "copy.db"
        assert run(capsys, str(copy), "import", str(exported))[0] == 0
        assert {p.name: mode(p) for p in (db, exported, heads, copy)} == {
            "db.sqlite": 0o600,
            "export.jsonl": 0o600,
            "heads.jsonl": 0o600,
            "copy.db": 0o600,
        }
        mine = tmp_path / "mine.jsonl"
        mine.write_bytes(b"old")
        mine.chmod(0o640)  # a file that exists keeps the mode its owner gave it
        assert run(capsys, str(db), "export", "-o", str(mine))[0] == 0
        assert (mode(mine), mine.read_bytes() == exported.read_bytes()) == (0o640, True)
        failed = tmp_path / "failed.jsonl"
        code, _, err = run(capsys, str(db), "export", "--session", "nobody", "-o", str(failed))
        assert (code, "no session 'nobody'" in err, failed.exists()) == (2, True, False)
    finally:
        os.umask(old)
