"""The audit's check of compactions: what a ``HistoryCompacted`` says it replaced and
kept must be what the branch showed.

The hash chain proves that no event changed after it was written; this check proves
that each compaction, as written, told the truth about the history it compacted: the
run it names (``replaced_from`` to ``replaced_upto``, ``replaced`` items) was shown
there, after the item ``keep_upto``; the items it shows after its new ones are
byte-for-byte the items that followed the run; and a revert restores exactly the
items the compaction it names had replaced. The summary itself cannot be checked (a
model wrote it); everything else a compaction shows can.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set

from sqlalchemy import Connection

from eventstore import HistoryCompacted, RecordedEvent
from eventstore.audit import Finding
from eventstore.records import to_micros

from .history import HistoryState, Row, apply

__all__ = ["CompactionCheck", "compaction_findings"]


def compaction_findings(stream_id: str, events: Sequence[RecordedEvent]) -> list[Finding]:
    """A finding for each compaction of ``events`` (one stream's) that does not match
    the history it compacted."""
    if not any(isinstance(r.event, HistoryCompacted) for r in events):
        return []
    findings: list[Finding] = []
    state = HistoryState()
    # Each compaction by version, with the state before it.
    before: dict[int, tuple[HistoryState, HistoryCompacted]] = {}
    for recorded in events:
        event = recorded.event
        if isinstance(event, HistoryCompacted):
            before[recorded.version] = (state, event)
            problem = _problem(state, event, before)
            if problem is not None:
                findings.append(Finding(stream_id, recorded.version, problem, check="compaction"))
        state = apply(state, event, recorded.version, recorded_at=to_micros(recorded.recorded_at))
    return findings


def _problem(
    state: HistoryState,
    event: HistoryCompacted,
    before: dict[int, tuple[HistoryState, HistoryCompacted]],
) -> str | None:
    """What is wrong with ``event`` applied to ``state``, or None."""
    shown = state.view(event.branch_id)
    at = next((n for n, row in enumerate(shown) if row.seq > event.keep_upto), len(shown))
    if event.keep_upto and (at == 0 or shown[at - 1].seq != event.keep_upto):
        return f"compaction keeps up to item {event.keep_upto}, which the branch did not show"
    run = shown[at : at + event.replaced]
    if len(run) != event.replaced or (
        run and (run[0].seq, run[-1].seq) != (event.replaced_from, event.replaced_upto)
    ):
        return (
            f"compaction names {event.replaced} items from {event.replaced_from} to "
            f"{event.replaced_upto} that the branch did not show there"
        )
    if not 0 <= event.added <= len(event.items):
        return f"compaction adds {event.added} of its {len(event.items)} items"
    kept = [bytes(raw) for raw in event.items[event.added :]]
    if kept != [row.item for row in shown[at + event.replaced :]]:
        return "compaction's kept items are not the items that followed the ones it replaced"
    if event.reverts:
        return _revert_problem(event, before)
    return None


def _revert_problem(
    event: HistoryCompacted, before: dict[int, tuple[HistoryState, HistoryCompacted]]
) -> str | None:
    """What is wrong with a revert: it must restore what the compaction it names replaced."""
    found = before.get(event.reverts)
    if found is None or found[1].branch_id != event.branch_id:
        return f"revert names version {event.reverts}, which is no compaction of the branch"
    undone, compacted = found
    shown: list[Row] = undone.view(event.branch_id)
    at = next((n for n, r in enumerate(shown) if r.seq > compacted.keep_upto), len(shown))
    run = [r.item for r in shown[at : at + compacted.replaced]]
    if [bytes(raw) for raw in event.items[: event.added]] != run:
        return f"revert does not restore the items the compaction at v{event.reverts} replaced"
    return None


class CompactionCheck:
    """:func:`compaction_findings` as a check of the audit's one pass over the log."""

    def check_stream(
        self, conn: Connection, stream_id: str, events: Sequence[RecordedEvent]
    ) -> Iterable[Finding]:
        return compaction_findings(stream_id, events)

    def finish(self, conn: Connection, stream_ids: Set[str]) -> Iterable[Finding]:
        return ()
