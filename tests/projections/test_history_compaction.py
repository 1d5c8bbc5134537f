"""HistoryCompacted in the history and usage projections: the tables the appends keep
equal the fold of the log and a rebuild, whatever mix of compactions, pops, clears
and branches (every backend)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import EventStore, HistoryCompacted, UsageRecorded, encode_items
from projections.usage_table import USAGE

from ..conftest import Backend
from .test_history import (
    HISTORY,
    ITEMS,
    apply_ops,
    assert_tables_equal_fold_and_rebuild,
    operations,
)

compactions = st.lists(
    st.one_of(
        operations.map(lambda ops: ("ops", ops)),
        st.tuples(
            st.just("compact"),
            st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(0, 3)),
        ),
        st.tuples(st.just("usage"), st.integers(1, 50)),
    ),
    max_size=6,
)


async def compact(store: EventStore, stream: str, start: int, count: int, new: int) -> None:
    """Replace ``count`` shown items of main from ``start`` by ``new`` items (if shown)."""
    shown = await store.run(lambda c: HISTORY.read_entries(c, stream, "main", None))
    run = shown[start : start + count]
    if not run:
        return
    rest = shown[start + len(run) :]
    event = HistoryCompacted(
        items=(*encode_items([ITEMS[0]] * new), *(msgspec.Raw(item) for _, item in rest)),
        added=new,
        keep_upto=shown[start - 1][0] if start else 0,
        replaced=len(run),
        replaced_from=run[0][0],
        replaced_upto=run[-1][0],
    )
    await store.append(stream, [event])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=compactions)
async def test_live_tables_equal_fold_and_rebuild_with_compactions(
    backend: Backend, steps: list[tuple[str, Any]]
) -> None:
    store = backend.store(projectors=(HISTORY, USAGE))
    stream = f"c{id(steps)}"
    await apply_ops(store, stream, [("add", [0, 1, 2, 3]), ("add", [0, 4, 5])])
    for kind, arg in steps:
        if kind == "ops":
            await apply_ops(store, stream, arg)
        elif kind == "compact":
            await compact(store, stream, *arg)
        else:
            await store.append(stream, [UsageRecorded(requests=1, total_tokens=arg)])
    await assert_tables_equal_fold_and_rebuild(store, stream)
