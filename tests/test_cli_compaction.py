"""The command line shows compactions: ``log``, ``history`` and ``tree`` (every backend)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sessions import AdvancedSQLAlchemySession

from .conftest import Backend
from .test_cli import run


async def summarize(items: list[Any]) -> str:
    return "two questions"


@pytest.fixture
async def db(shared_backend: Backend) -> str:
    """Session s: two turns compacted into a summary, then one more turn."""
    url = shared_backend.target
    if not url.startswith(("postgresql", "mysql")):
        url = f"sqlite:///{url}"
    async with AdvancedSQLAlchemySession("s", db_url=url, create_tables=True) as session:
        for n in range(3):
            await session.add_items(
                [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
            )
        await session.compact(summarize=summarize, keep_last_turns=1)
        await session.add_items([{"role": "user", "content": "q3"}])
    return shared_backend.target


def test_log_history_and_tree_show_the_compaction(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, db, "log", "s")
    assert code == 0
    line = next(line for line in out.splitlines() if "HistoryCompacted" in line)
    assert "compacted 4 item(s) (v2..v3) into 1, 2 kept, on main" in line
    code, out, _ = run(capsys, db, "history", "s")
    assert "system: Summary of the earlier conversation: two questions" in out
    assert "(v5: compacted 4 item(s)" in out
    assert "--as-of 4 shows the history before it" in out
    code, out, _ = run(capsys, db, "history", "s", "--as-of", "4", "--json")
    assert [i["content"] for i in json.loads(out)] == ["q0", "a0", "q1", "a1", "q2", "a2"]
    code, out, _ = run(capsys, db, "tree", "s")
    assert "compacted 1 time(s)" in out
