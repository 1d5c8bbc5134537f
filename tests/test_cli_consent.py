"""Commands that delete (retention, shred) never run unasked: they ask on a terminal
(a pseudo-terminal here), need --yes off one, and --dry-run lists what would go."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from sessions import EncryptedSession, SQLiteSession, StoreSession
from sessions.admin import open_store

from .test_cli import run

ROOT = Path(__file__).parent.parent
KEY = "a-master-key-of-32-bytes-for-tests"


async def _fill(db: Path) -> None:
    async with open_store(db, create=True) as store:
        for sid in ("alice", "bob"):
            await StoreSession(sid, store).add_items([{"role": "user", "content": sid}])
    async with EncryptedSession(session=SQLiteSession("secret", db), encryption_key=KEY) as sealed:
        await sealed.add_items([{"role": "user", "content": "my account is 12-345"}])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "chat.db"
    asyncio.run(_fill(path))
    return path


def _sessions(db: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, _ = run(capsys, str(db), "sessions", "--json")
    assert code == 0
    return [s["session_id"] for s in json.loads(out)]


def on_a_terminal(*argv: str, answer: str) -> tuple[int, str]:
    """Run ``convstore ARGV`` with a pseudo-terminal as its standard input, output and
    error; type ``answer`` once it asks. Returns its status and everything it wrote."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sessions.cli", *argv],
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=ROOT,
        close_fds=True,
    )
    os.close(child)
    seen = b""
    answered = False
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        assert ready, f"no output for a minute; so far: {seen!r}"
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal: it is done
            break
        if not data:
            break
        seen += data
        if not answered and b"[y/N] " in seen:
            os.write(main, answer.encode() + b"\n")
            answered = True
    os.close(main)
    return process.wait(), seen.decode().replace("\r\n", "\n")


def test_retention_asks_on_a_terminal(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, seen = on_a_terminal(str(db), "retention", "--older-than", "0s", answer="n")
    assert code == 1
    lines = seen.splitlines()
    assert lines[0] == "session  events  last written (UTC)"
    assert [line.split()[0] for line in lines[2:5]] == ["alice", "bob", "secret"]
    assert lines[5] == (
        "This will remove these 3 session(s), idle for longer than 0s: their events and "
        "projection rows (a tombstone stays)."
    )
    assert lines[6:] == ["Go ahead? [y/N] n", "convstore: nothing was changed"]
    assert _sessions(db, capsys) == ["alice", "bob", "secret"]
    code, seen = on_a_terminal(str(db), "retention", "--older-than", "0s", answer="y")
    assert code == 0
    assert seen.endswith("removed 3 session(s) idle for longer than 0s\n")
    assert _sessions(db, capsys) == []


def test_shred_asks_on_a_terminal(db: Path) -> None:
    code, seen = on_a_terminal(str(db), "shred", "secret", answer="")
    assert code == 1
    assert seen.startswith(
        "This will destroy the data key of 'secret' (2 event(s)): its items can never be "
        "decrypted again, with any key.\nGo ahead? [y/N] \n"
    )
    assert asyncio.run(_readable(db))
    code, seen = on_a_terminal(str(db), "shred", "secret", answer="yes")
    assert (code, "its items cannot be read any more" in seen) == (0, True)
    assert not asyncio.run(_readable(db))


async def _readable(db: Path) -> bool:
    from eventstore import KeyShreddedError

    async with EncryptedSession(session=SQLiteSession("secret", db), encryption_key=KEY) as s:
        try:
            return bool(await s.get_items())
        except KeyShreddedError:
            return False


def test_off_a_terminal_they_need_yes(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["retention", "--older-than", "0s"], ["shred", "secret"]):
        code, out, err = run(capsys, str(db), *argv)
        assert (code, out) == (2, "")
        assert err == (
            f"convstore: '{argv[0]}' deletes data and standard input is not a terminal to "
            "confirm it: pass --yes to go ahead (--dry-run lists what would go)\n"
        )
    assert _sessions(db, capsys) == ["alice", "bob", "secret"]
    assert asyncio.run(_readable(db))
    code, out, _ = run(capsys, str(db), "shred", "secret", "--yes")
    assert (code, asyncio.run(_readable(db))) == (0, False)
    code, out, _ = run(capsys, str(db), "retention", "--older-than", "0s", "--yes", "--json")
    assert (code, len(json.loads(out)["sessions"])) == (0, 3)
    assert _sessions(db, capsys) == []


def test_dry_run_lists_what_would_go(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(db), "retention", "--older-than", "0s", "--dry-run")
    assert code == 0
    assert out.splitlines()[-1] == "would remove 3 session(s) idle for longer than 0s"
    code, out, _ = run(capsys, str(db), "--json", "retention", "--older-than", "0s", "--dry-run")
    listed = json.loads(out)
    assert listed["dry_run"] is True
    assert [(s["session_id"], s["version"]) for s in listed["sessions"]] == [
        ("alice", 2),
        ("bob", 2),
        ("secret", 2),
    ]
    code, out, _ = run(capsys, str(db), "shred", "secret", "--dry-run")
    assert (code, out.startswith("would destroy the data key of 'secret'")) == (0, True)
    code, out, _ = run(capsys, str(db), "shred", "secret", "--dry-run", "--json")
    assert json.loads(out) == {"session": "secret", "dry_run": True, "would_shred": True}
    assert _sessions(db, capsys) == ["alice", "bob", "secret"]
    assert asyncio.run(_readable(db))


async def test_the_python_functions_need_no_consent(db: Path) -> None:
    """Scripts express consent by calling them (docs/cli.md)."""
    from datetime import timedelta

    from sessions import shred_session
    from sessions.admin import retention

    async with open_store(db) as store:
        assert [r.session_id for r in await retention(store, timedelta(0), dry_run=True)] == [
            "alice",
            "bob",
            "secret",
        ]
        assert await shred_session(store, "secret")
        assert len(await retention(store, timedelta(0))) == 3
