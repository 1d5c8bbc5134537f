"""The convstore command on SQLite files, PostgreSQL and MariaDB: every subcommand,
readable tables, --json (before or after the command), exit codes, one-line errors."""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from agents.memory import SQLiteSession as SdkSQLiteSession

from eventstore import EventStore
from sessions import StoreSession
from sessions.base import HISTORY
from sessions.cli import format_duration, main, parse_duration
from sessions.cli.progress import ProgressBar

from .conftest import Backend


async def fill(store: EventStore) -> None:
    alice = StoreSession("alice", store)
    await alice.add_items([{"role": "user", "content": "Create a note"}])
    await alice.add_items([{"role": "assistant", "content": "Done."}])
    await alice.pop_item()
    await StoreSession("bob", store).add_items([{"role": "user", "content": "Hi"}])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    code = exit_info.value.code
    assert isinstance(code, int)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
async def db(shared_backend: Backend) -> str:
    """A convstore database (SQLite file, PostgreSQL, MariaDB) with alice and bob."""
    await fill(shared_backend.store(projectors=(HISTORY,)))
    return shared_backend.target


def raw_sql(db: str, statement: str) -> None:
    """Tamper with the database behind the store's back."""
    import asyncio

    from sqlalchemy import text

    async def go() -> None:
        async with EventStore(db, create_tables=False, projectors=[HISTORY]) as store:
            await store.run(lambda conn: conn.execute(text(statement)), write=True)

    asyncio.run(go())


def test_sessions_table_and_json_either_side(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "sessions")
    assert code == 0
    assert "alice" in out
    assert "bob" in out
    for argv in ([db, "sessions", "--json"], ["--json", db, "sessions"]):
        code, out, _ = run(capsys, *argv)
        listed = {s["session_id"]: s for s in json.loads(out)}
        assert listed["alice"]["version"] == 4  # started, added, added, popped
        assert listed["alice"]["items"] == 1


def test_log_lists_every_event(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "log", "alice", "--json")
    assert code == 0
    events = json.loads(out)
    assert [e["type"] for e in events] == [
        "SessionStarted",
        "ItemsAdded",
        "ItemsAdded",
        "ItemPopped",
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    assert "ItemPopped" in run(capsys, db, "log", "alice")[1]


def test_history_now_as_of_a_version_and_a_time(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, db, "history", "alice", "--json")
    assert json.loads(out) == [{"role": "user", "content": "Create a note"}]
    _, out, _ = run(capsys, db, "history", "alice", "--as-of", "3", "--json")
    assert [i["content"] for i in json.loads(out)] == ["Create a note", "Done."]
    _, out, _ = run(capsys, db, "--json", "log", "alice")
    third = json.loads(out)[2]["recorded_at"]
    _, out, _ = run(capsys, db, "history", "alice", "--as-of", third, "--json")
    assert [i["content"] for i in json.loads(out)] == ["Create a note", "Done."]
    _, out, _ = run(capsys, db, "history", "alice")
    assert "user: Create a note" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history", "nobody"], "no session 'nobody'"),
        (["log", "nobody"], "no session 'nobody'"),
        (["history", "alice", "--as-of", "9"], "versions 1..4, not 9"),
        (["history", "alice", "--branch", "nope"], "no branch 'nope'"),
        (["history", "alice", "--as-of", "yesterday"], "neither a version nor a time"),
        (["retention", "--older-than", "ten days"], "not a duration"),
        (["export", "--session", "nobody"], "no session 'nobody'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_unknown_things_are_one_line_errors(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, db, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert out == ""


def test_audit_clean_then_tampered(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "audit")
    assert (code, "audit passed" in out) == (0, True)
    raw_sql(
        db,
        "UPDATE convstore_events SET recorded_at = recorded_at + 1 "
        "WHERE stream_id = 'alice' AND version = 2",
    )
    code, out, _ = run(capsys, db, "audit")
    assert code == 1
    assert "session 'alice' v2: stored hash does not match" in out
    code, out, _ = run(capsys, db, "audit", "--json")
    report = json.loads(out)
    assert (code, report["ok"]) == (1, False)
    assert {"session": "alice", "version": 2}.items() <= report["findings"][0].items()


def test_checkpoints_and_audit_against_them(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, other = tmp_path / "key", tmp_path / "other"
    key.write_text("s3cret audit key\n")
    other.write_text("another key\n")
    heads = tmp_path / "heads.jsonl"
    code, _, err = run(capsys, db, "checkpoint", "--key-file", str(key), "-o", str(heads))
    assert code == 0
    assert "2 session(s)" in err
    code, out, _ = run(capsys, db, "audit", "--against", str(heads), "--key-file", str(key))
    assert (code, "against 2 checkpoint(s)" in out) == (0, True)
    code, _, err = run(capsys, db, "audit", "--against", str(heads), "--key-file", str(other))
    assert code == 2
    assert "signature does not verify" in err
    code, _, err = run(capsys, db, "audit", "--against", str(heads))
    assert (code, "the checkpoints are signed" in err) == (2, True)


def test_replay_repairs_projections_and_refuses_a_tampered_log(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw_sql(db, "DELETE FROM convstore_items WHERE stream_id = 'bob'")
    code, out, _ = run(capsys, db, "verify", "--json")
    assert (code, json.loads(out)["ok"]) == (1, False)
    assert run(capsys, db, "audit")[0] == 1
    code, out, _ = run(capsys, db, "replay")
    assert (code, "rebuilt every projection" in out) == (0, True)
    assert run(capsys, db, "verify")[0] == 0
    assert run(capsys, db, "audit")[0] == 0
    raw_sql(db, "DELETE FROM convstore_events WHERE stream_id = 'alice' AND version = 2")
    code, out, err = run(capsys, db, "replay")
    assert code == 1
    assert "refusing to replay" in err
    assert "session 'alice' v3: v2 missing" in err


def test_export_and_import_round_trip(
    db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_file = tmp_path / "dump.jsonl"
    code, _, err = run(capsys, db, "export", "-o", str(out_file))
    assert (code, "6 event(s)" in err) == (0, True)
    code, stdout, _ = run(capsys, db, "export")
    assert stdout.encode() == out_file.read_bytes()
    copy = tmp_path / "copy.db"
    code, out, _ = run(capsys, str(copy), "import", str(out_file))
    assert (code, "imported 6 event(s) of 2 session(s)" in out) == (0, True)
    code, again, _ = run(capsys, str(copy), "export")
    assert again.encode() == out_file.read_bytes()  # every backend: no positions in a file
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(out_file.read_bytes())))
    code, out, _ = run(capsys, str(copy), "--json", "import", "-")
    assert (code, json.loads(out)["skipped"]) == (0, 6)
    assert run(capsys, str(copy), "audit")[0] == 0
    code, out, _ = run(capsys, db, "export", "--session", "bob")
    assert [json.loads(line)["version"] for line in out.splitlines()] == [1, 2]


async def test_import_sdk(db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "sdk.db"
    sdk = SdkSQLiteSession("carol", source)
    await sdk.add_items([{"role": "user", "content": "from the SDK"}])
    sdk.close()
    code, out, _ = await _in_thread(capsys, db, "import-sdk", str(source))
    assert (code, "imported 1 item(s), 0 branch(es)" in out) == (0, True)
    code, out, _ = await _in_thread(capsys, db, "history", "carol", "--json")
    assert json.loads(out) == [{"role": "user", "content": "from the SDK"}]
    code, out, _ = await _in_thread(capsys, db, "--json", "import-sdk", str(source))
    assert json.loads(out)["up_to_date"] == 1


async def _in_thread(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    import asyncio

    return await asyncio.to_thread(run, capsys, *argv)


def test_retention(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "retention", "--older-than", "1d", "--yes")
    assert (code, "removed 0 session(s)" in out) == (0, True)
    code, out, _ = run(capsys, db, "retention", "--older-than", "0s", "--dry-run", "--json")
    assert [s["session_id"] for s in json.loads(out)["sessions"]] == ["alice", "bob"]
    assert len(json.loads(run(capsys, db, "sessions", "--json")[1])) == 2
    code, out, _ = run(capsys, db, "retention", "--older-than", "0s", "--yes")
    assert "removed 2 session(s)" in out
    assert json.loads(run(capsys, db, "sessions", "--json")[1]) == []
    code, out, _ = run(capsys, db, "audit", "--json")
    assert (code, json.loads(out)["removed_sessions"]) == (0, 2)


# -- errors and files ------------------------------------------------------------------


def test_init_creates_and_reads_never_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, str(missing), "sessions")
    assert (code, "no database at" in err, missing.exists()) == (2, True, False)
    code, _, err = run(capsys, f"sqlite:///{missing}", "audit")
    assert (code, missing.exists()) == (2, False)
    code, out, _ = run(capsys, str(missing), "init")
    assert "tables are ready" in out
    assert (code, missing.exists()) == (0, True)
    assert run(capsys, str(missing), "init")[0] == 0
    assert run(capsys, str(missing), "sessions", "--json")[1] == "[]\n"


def test_init_creates_what_every_session_class_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `init`, an Advanced session opened without create_tables can write, and
    `usage` reads the database (both need the usage projection's tables)."""
    import asyncio

    from sessions import AdvancedSQLAlchemySession

    path = tmp_path / "app.db"
    assert run(capsys, str(path), "init")[0] == 0

    async def converse() -> list[object]:
        session = AdvancedSQLAlchemySession("u", db_url=f"sqlite:///{path}")
        await session.add_items([{"role": "user", "content": "hello"}])
        try:
            return await session.get_items()
        finally:
            await session.close()

    assert asyncio.run(converse()) == [{"role": "user", "content": "hello"}]
    code, out, err = run(capsys, str(path), "usage", "u", "--json")
    assert code == 0, err
    assert json.loads(out)["session_id"] == "u"


def test_foreign_and_empty_files_are_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, _, err = run(capsys, str(empty), "sessions")
    assert (code, "an empty file" in err, empty.read_bytes()) == (2, True, b"")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = foreign.read_bytes()
    for command in ("sessions", "audit", "export", "replay", "retention"):
        argv = [str(foreign), command] + (["--older-than", "1d"] if command == "retention" else [])
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert "not a convstore one" in err
    assert foreign.read_bytes() == before
    assert not Path(f"{foreign}-wal").exists()
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    code, _, err = run(capsys, str(broken), "sessions")
    assert (code, err.count("\n"), broken.stat().st_size) == (2, 1, 216)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    code, _, err = run(capsys, str(text_file), "log", "x")
    assert (code, "not a SQLite database" in err) == (2, True)


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("postgresql://nobody@127.0.0.1:1/none", "Connect call failed"),
        ("oracle://scott@localhost/db", "does not support the 'oracle' database"),
        ("postgresql://:bad:url", "not a database URL"),
    ],
)
def test_unreachable_or_bad_databases(
    capsys: pytest.CaptureFixture[str], db: str, message: str
) -> None:
    code, out, err = run(capsys, db, "sessions")
    assert code == 2
    assert err.startswith("convstore: ")
    assert message in err
    assert err.count("\n") == 1
    assert out == ""


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out.startswith("convstore ")) == (0, True)
    code, out, _ = run(capsys, "-h")
    assert code == 0
    assert "examples:" in out
    assert "import-sdk" in out
    code, out, _ = run(capsys, "x.db", "retention", "-h")
    assert (code, "--older-than" in out) == (0, True)
    code, _, err = run(capsys)
    assert (code, err.count("\n")) == (2, 1)


def test_the_command_does_not_import_the_agents_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sessions.cli import main\n"
        "try:\n"
        f"    main([{str(tmp_path / 'x.db')!r}, 'init'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'agents' not in sys.modules, 'the CLI imported the Agents SDK'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_durations() -> None:
    assert parse_duration("1w2d") == parse_duration("9d")
    assert parse_duration("90m").total_seconds() == 5400
    assert format_duration(parse_duration("1d12h")) == "1d12h"
    assert format_duration(parse_duration("0s")) == "0s"


def test_progress_is_plain_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import sessions.cli.progress as progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    stream = io.StringIO()
    bar = ProgressBar(200, "auditing", stream=stream)
    bar.update(100)
    bar.update(100)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("auditing: 50% 100/200")
    assert lines[-1].startswith("auditing: 100% 200/200")
    assert "\r" not in stream.getvalue()
    quiet = io.StringIO()
    ProgressBar(10, "x", stream=quiet).close()  # quick work prints nothing off a terminal
    assert quiet.getvalue() == ""


def test_the_replay_audit_example_runs() -> None:
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "replay_audit.py")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert "4. after an edit with raw SQL: ok=False" in done.stdout
    assert "5. replay refused" in done.stdout
    assert "6. restored 4 events from the export: audit ok=True" in done.stdout


def test_verify_counts_events(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A count of the events folded, not the log's last position (on PostgreSQL a
    position is a transaction id shifted left; after a removal it is past the count)."""
    import asyncio

    from sessions.admin import delete_session

    async def remove_bob() -> None:
        async with EventStore(db, create_tables=False, projectors=[HISTORY]) as store:
            await delete_session(store, "bob")

    asyncio.run(remove_bob())
    code, out, _ = run(capsys, db, "verify")
    assert (code, out) == (0, "projections match a fold of the log (4 events)\n")
    code, out, _ = run(capsys, db, "verify", "--json")
    assert json.loads(out) == {"ok": True, "events": 4, "differences": []}


def test_command_help_needs_no_database(capsys: pytest.CaptureFixture[str]) -> None:
    from sessions.cli import COMMANDS

    for name in COMMANDS:
        for argv in ([name, "--help"], ["--json", name, "-h"]):
            code, out, err = run(capsys, *argv)
            assert (code, err) == (0, ""), argv
            assert out.startswith(f"usage: convstore DB {name} "), argv
    # A database named like a command: the help of the command that follows it.
    code, out, _ = run(capsys, "log", "tree", "--help")
    assert (code, out.startswith("usage: convstore DB tree ")) == (0, True)


def test_every_argument_has_help() -> None:
    from sessions.cli import build_parser, command_parsers

    parsers = {"convstore": build_parser(), **command_parsers()}
    missing = [
        f"{name} {action.dest}"
        for name, parser in parsers.items()
        for action in parser._actions  # argparse keeps its arguments here
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["history", "--help"]])
def test_version_and_help_import_no_database_code(argv: list[str]) -> None:
    """They stay quick: neither SQLAlchemy nor the event store is imported
    (benchmarks/cli_startup.py measures the time)."""
    code = (
        "import sys\n"
        "from sessions.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('sqlalchemy', 'eventstore', 'projections', 'msgspec', 'asyncio', 'agents'))\n"
        "assert heavy == [], heavy\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
    )


def test_log_lines_are_summarised_and_full_shows_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from eventstore import SessionStarted, UsageRecorded

    db = str(tmp_path / "usage.db")
    details = {"input_tokens_details": {"cached_tokens": 12, "cache_write_tokens": 3}}

    async def write() -> None:
        async with EventStore(db, projectors=[HISTORY]) as store:
            await store.append(
                "u",
                [
                    SessionStarted(metadata={"note": "x" * 300}),
                    UsageRecorded(
                        requests=3,
                        input_tokens=1200,
                        output_tokens=34,
                        total_tokens=1234,
                        details=details,
                    ),
                ],
            )

    asyncio.run(write())
    code, out, _ = run(capsys, db, "log", "u")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) < 150
    assert "3 request(s), 1,200 in + 34 out = 1,234 tokens on main (session only)" in out
    assert lines[2].split()[5].startswith("metadata={'note':")
    assert "..." in lines[2]
    code, out, _ = run(capsys, db, "log", "u", "--full")
    assert code == 0
    assert "x" * 300 in out
    assert "details={'input_tokens_details': {'cached_tokens': 12, 'cache_write_tokens': 3}}" in out


def test_history_of_an_encrypted_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from sessions import EncryptedSession, SQLiteSession

    db = str(tmp_path / "sealed.db")
    passphrase = "a passphrase of the application"

    async def write() -> None:
        async with EncryptedSession(
            session=SQLiteSession("s", db), encryption_key=passphrase
        ) as sealed:
            await sealed.add_items([{"role": "user", "content": "my account is 12-345"}])
            await sealed.add_items([{"role": "assistant", "content": "noted"}])

    asyncio.run(write())
    code, out, _ = run(capsys, db, "history", "s")
    lines = out.splitlines()
    assert code == 0
    assert lines[2].startswith("1  user: [encrypted, ")
    assert lines[3].startswith("2  item: [encrypted, ")
    assert lines[3].endswith("characters of ciphertext; --key-file decrypts]")
    assert "12-345" not in out
    stored = json.loads(run(capsys, db, "history", "s", "--json")[1])
    assert all("__convstore_encrypted__" in item for item in stored)  # as stored
    key = tmp_path / "master.key"
    key.write_text(passphrase + "\n")
    code, out, _ = run(capsys, db, "history", "s", "--key-file", str(key))
    assert (code, out.splitlines()[2:]) == (
        0,
        ["1  user: my account is 12-345", "2  assistant: noted"],
    )
    code, out, _ = run(capsys, db, "history", "s", "--key-file", str(key), "--as-of", "2", "--json")
    assert json.loads(out) == [{"role": "user", "content": "my account is 12-345"}]
    key.write_text("another passphrase, not the one\n")
    code, out, err = run(capsys, db, "history", "s", "--key-file", str(key))
    assert (code, out) == (2, "")
    assert (
        err
        == "convstore: the encryption key is not the master key this key table was written with\n"
    )


def test_progress_is_a_bar_redrawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """What docs/cli.md shows: a bar redrawn in place, then a newline."""
    import sessions.cli.progress as progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(progress, "TERMINAL_INTERVAL", 0.0)
    stream = Terminal()
    bar = ProgressBar(101_000, "auditing", stream=stream)
    bar.update(50_500)
    bar.close()
    drawn = stream.getvalue()
    assert drawn.startswith("\rauditing [###############...............] 50,500/101,000 (")
    assert drawn.endswith("/s)\n")
    assert drawn.count("\r") == 2


def test_a_time_without_an_offset_is_utc_as_the_tables_show_it() -> None:
    from datetime import UTC, datetime

    from sessions.cli.args import parse_as_of

    assert parse_as_of("2026-01-31T12:00:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_as_of("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_as_of("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="neither a version nor a time"):
        parse_as_of("yesterday")
