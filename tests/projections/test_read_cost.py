"""Reads never replay the log, and get_items(limit=n) does not grow with the history.

Timing is never asserted: instead the database's own query plan must show a range
scan of the primary key that yields rows already in order (no sort, no full scan), so
``LIMIT 20`` reads 20 index entries at 100 items as at 1,000,000.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, text

from eventstore import ItemsAdded, encode_items
from eventstore.backends import dialect_for
from projections import HistoryProjector

from ..conftest import Backend

HISTORY = HistoryProjector()


def explain(conn: Connection, dialect: str, sql: str) -> str:
    if dialect == "sqlite":
        return "\n".join(str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    if dialect == "postgresql":
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: judge the index
        return "\n".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {sql}")))
    rows = conn.execute(text(f"EXPLAIN {sql}")).mappings().all()
    return "\n".join(f"{r['type']} {r['key']} {r['Extra']}" for r in rows)


async def test_newest_items_read_is_an_ordered_index_range(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    for n in range(50):
        await store.append("s", [ItemsAdded(items=encode_items([{"n": n}]))])
    await store.append("other", [ItemsAdded(items=encode_items([{"n": -1}]))])

    def plans(conn: Connection) -> dict[str, Any]:
        found = {}
        queries = {
            "limit=20": HISTORY.items_query("s", "main", 20),
            "all": HISTORY.items_query("s", "main", None),
            "newest (pop)": HISTORY.top_query("s", "main"),
            "segment, newest 20": HISTORY.range_query("s", "main", 1 << 20, 40 << 20, 20),
            "one statement, newest 20": HISTORY.fast_query("s", "main", 20),
        }
        for name, query in queries.items():
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            found[name] = explain(conn, store.dialect_name, sql)
        return found

    found = await store.run(plans)
    # The payloads the newest rows point into: a range of the (stream_id, version)
    # index, never every event of the session through the (stream_id, event_id) one.
    one = found["one statement, newest 20"].lower()
    assert "stream_event_id" not in one, one
    assert "convstore_events_2" not in one, one
    for limit, plan in found.items():
        lowered = plan.lower()
        assert "sort" not in lowered.replace("using index", ""), (limit, plan)
        assert "temp b-tree" not in lowered, (limit, plan)
        if store.dialect_name == "sqlite":
            assert "using primary key" in lowered or "using index" in lowered, plan
            assert "scan convstore_items" not in lowered.replace(" using", "|"), plan
        elif store.dialect_name == "postgresql":
            assert "index" in lowered, plan
            if limit != "all":  # the newest rows straight off the end of the key
                assert "index scan backward" in lowered, (limit, plan)
                # No aggregate over the session (max() would read all of it): the one
                # allowed is the min() of the limited rows' keys (where the payloads
                # they point into start), whose input is that limit.
                lines = lowered.splitlines()
                for at, line in enumerate(lines):
                    if "aggregate" in line:
                        assert "limit" in lines[at + 1], (limit, plan)
        else:
            assert "filesort" not in lowered, plan
            assert "primary" in lowered, plan
    newest = await store.run(lambda c: HISTORY.read_items(c, "s", "main", 20))
    assert len(newest) == 20


async def test_array_reads_are_index_ranges_without_a_sort(backend: Backend) -> None:
    """The reads get_items uses on SQLite (one row per event, array_read): the
    window's events by the (stream_id, version) index, each joined to its items by a
    range of the primary key; no sort, no scan of a table. With a limit, the newest
    rows straight off the end of the key, as above."""
    store = backend.store(projectors=(HISTORY,))
    if not dialect_for(store.dialect_name).reads_item_arrays:
        pytest.skip("the array read runs where the dialect reads item arrays (SQLite)")
    for n in range(50):
        await store.append("s", [ItemsAdded(items=encode_items([{"n": n}, {"m": n}]))])
    await store.append("other", [ItemsAdded(items=encode_items([{"n": -1}]))])

    def plans(conn: Connection) -> dict[str, str]:
        queries = {
            "newest 20": HISTORY.array_read("s", "main", limit=20, marker=True),
            "all": HISTORY.array_read("s", "main", marker=True),
            "segment, newest 20": HISTORY.array_read("s", "main", 1 << 20, 40 << 20, limit=20),
            "segment": HISTORY.array_read("s", "main", 1 << 20, 40 << 20),
        }
        found = {}
        for name, query in queries.items():
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            found[name] = explain(conn, store.dialect_name, sql)
        return found

    for name, plan in (await store.run(plans)).items():
        lowered = plan.lower().replace(" using", "|")
        assert "temp b-tree" not in lowered, (name, plan)
        for table in ("convstore_items", "convstore_events", "spanned"):
            assert f"scan {table}" not in lowered, (name, plan)
        # The window's events through the (stream_id, version) index, a range of it.
        assert "spanned| index" in lowered, (name, plan)
        assert "version>? and version<?" in lowered, (name, plan)
    newest = await store.run(lambda c: HISTORY.read_arrays(c, "s", "main", 20))
    assert sum(count for _, count in newest) == 20
