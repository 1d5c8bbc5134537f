"""Usage queries never scan a session's turns: each is a primary-key look-up.

A branch's figures are, per segment, the owner's running totals at two bounds, each
the last row of a primary-key range (``ORDER BY anchor_seq DESC LIMIT 1``); the
session's totals and one turn's usage are exact key look-ups. The database's own
plans must show that (no sort, no scan), so they cost the same at 10 turns as at
10,000. Timing is never asserted.
"""

from __future__ import annotations

from sqlalchemy import Connection

from eventstore import ItemsAdded, UsageRecorded, encode_items
from projections import HistoryProjector, UsageProjector, item_seq

from ..conftest import Backend
from .test_read_cost import explain

HISTORY = HistoryProjector()
USAGE = UsageProjector()


async def test_usage_reads_are_primary_key_lookups(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY, USAGE))
    for stream in ("s", "other"):
        for n in range(40):
            result = await store.append(
                stream, [ItemsAdded(items=encode_items([{"role": "user", "content": str(n)}]))]
            )
            seq = item_seq(result.first_version, 0)
            await store.append(
                stream,
                [UsageRecorded(requests=1, input_tokens=n, anchor_branch="main", anchor_seq=seq)],
            )
    middle = item_seq(39, 0)  # a user message (turns are versions 1, 3, 5 ...)

    def plans(conn: Connection) -> dict[str, str]:
        queries = {
            "running total at a bound": USAGE.running_query("s", "main", middle),
            "session totals": USAGE.session_query("s"),
            "one turn": USAGE.turn_query("s", "main", middle),
        }
        return {
            name: explain(
                conn,
                store.dialect_name,
                str(query.compile(conn, compile_kwargs={"literal_binds": True})),
            )
            for name, query in queries.items()
        }

    for name, plan in (await store.run(plans)).items():
        lowered = plan.lower()
        assert "sort" not in lowered.replace("using index", ""), (name, plan)
        assert "temp b-tree" not in lowered, (name, plan)
        if store.dialect_name == "sqlite":
            assert "using primary key" in lowered or "using index" in lowered, (name, plan)
            assert "scan" not in lowered.replace("using primary key", ""), (name, plan)
        elif store.dialect_name == "postgresql":
            assert "index" in lowered, (name, plan)
            assert "seq scan" not in lowered, (name, plan)
            if name == "running total at a bound":
                assert "index scan backward" in lowered, plan
        else:
            assert "filesort" not in lowered, (name, plan)
            assert "primary" in lowered, (name, plan)
            assert "impossible" not in lowered, (name, plan)

    figures = await store.run(lambda conn: USAGE.branch_figures(conn, "s", "main"))
    assert (figures.turns, figures.tokens.input_tokens) == (40, sum(range(40)))
