"""The viewer's time travel shows a compaction: what it replaced, what it added."""

from __future__ import annotations

from typing import Any

from sessions import SQLiteSession
from sessions.viewer.pages import travel_page


async def summarize(items: list[Any]) -> str:
    return "two turns"


async def test_time_travel_at_a_compaction_shows_what_it_replaced(tmp_path: Any) -> None:
    async with SQLiteSession("s", str(tmp_path / "v.db")) as session:
        for n in range(3):
            await session.add_items(
                [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
            )
        result = await session.compact(summarize=summarize)
        assert result is not None
        await session.add_items([{"role": "user", "content": "later"}])
        page = await travel_page(session.store, "s", version=result.version)
        assert page.total_items == 3
        # the replaced items, and the kept ones whose copies follow the summary
        assert [v.parts[0].text for v in page.removed] == ["q0", "a0", "q1", "a1", "q2", "a2"]
        assert len(page.added) == 3  # the summary and the two kept copies
        row = next(e for e in page.events if e.type == "HistoryCompacted")
        assert row.summary.startswith("compacted 4 item(s)")
        before = await travel_page(session.store, "s", version=result.version - 1)
        assert before.total_items == 6
