"""The convstore command: readable tables, --json for programs, exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sessions import SQLiteSession
from sessions.cli import main


async def make_db(path: Path) -> None:
    async with SQLiteSession("alice", path) as session:
        await session.add_items([{"role": "user", "content": "Create a note"}])
        await session.add_items([{"role": "assistant", "content": "Done."}])
        await session.pop_item()
    async with SQLiteSession("bob", path) as session:
        await session.add_items([{"role": "user", "content": "Hi"}])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().out


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "c.db"
    await make_db(path)
    return path


def test_sessions_table_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(db), "sessions")
    assert code == 0
    assert "alice" in out
    assert "bob" in out
    code, out = run(capsys, str(db), "sessions", "--json")
    listed = {s["session_id"]: s for s in json.loads(out)}
    assert listed["alice"]["version"] == 4  # started, added, added, popped
    assert listed["alice"]["items"] == 1
    assert listed["bob"]["items"] == 1


def test_log_lists_every_event(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(db), "log", "alice", "--json")
    assert code == 0
    events = json.loads(out)
    assert [e["type"] for e in events] == [
        "SessionStarted",
        "ItemsAdded",
        "ItemsAdded",
        "ItemPopped",
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    code, out = run(capsys, str(db), "log", "alice")
    assert "ItemPopped" in out


def test_history_now_and_as_of(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = run(capsys, str(db), "history", "alice", "--json")
    assert json.loads(out) == [{"role": "user", "content": "Create a note"}]
    _, out = run(capsys, str(db), "history", "alice", "--as-of", "3", "--json")
    assert [i["content"] for i in json.loads(out)] == ["Create a note", "Done."]


def test_replay_and_verify(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, str(db), "verify")[0] == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM convstore_items WHERE stream_id = 'bob'")
    code, out = run(capsys, str(db), "verify", "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False
    assert run(capsys, str(db), "replay")[0] == 0
    code, out = run(capsys, str(db), "verify", "--json")
    assert (code, json.loads(out)["ok"]) == (0, True)


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.db"), "sessions"])
    assert exit_info.value.code == 2
    assert "no database" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(SystemExit) as exit_info:
        main([str(empty), "sessions"])
    assert exit_info.value.code == 2
    assert "tables do not exist" in capsys.readouterr().err
