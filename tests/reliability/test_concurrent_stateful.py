"""Hypothesis stateful test with real concurrency, on PostgreSQL: 4 processes x 4 tasks.

Each step is a batch of 16 calls drawn by hypothesis (add_items, pop_item,
clear_session on two sessions), sent to four worker processes that run their four
calls at once, every call on a new session object over the process's one engine. The
calls of a batch are concurrent, so the model cannot know their order in advance: the
log tells it. After each batch the model replays the batch's events of each session in
version order, and checks that

* every add is one ItemsAdded event with exactly its items, every clear one
  SessionCleared, and nothing else was written;
* every ItemPopped removes the newest item of the model at that point, and the items
  the pops returned are exactly the items those events removed; a pop that returned
  None ran when the session was empty (the model was empty at some point of the batch);
* each session now reads exactly the model's items;
* the audit (chains, versions, positions following versions, projections against a
  fold of the log) finds nothing.

Sized for CI: 6 examples of up to 20 batches (``CONVSTORE_LONG_TESTS=1``: 10 of up to
25, a few hundred batches).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from eventstore import EventStore, ItemPopped, ItemsAdded, SessionCleared, SessionStarted
from eventstore import decode_items as decode_raw_items
from projections.history import MAX_ITEMS_PER_EVENT
from sessions import StoreSession
from sessions.admin import audit_database
from sessions.base import HISTORY

from ..conftest import Backend
from ._figures import record
from ._support import sized

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 4
TASKS = 4
SESSIONS = 2

calls = st.tuples(
    st.sampled_from(["add", "add", "add", "pop", "pop", "clear"]),
    st.integers(0, SESSIONS - 1),
    st.integers(1, 3),  # items of an add
)
batches = st.lists(calls, min_size=PROCESSES * TASKS, max_size=PROCESSES * TASKS)


class Workers:
    """The worker processes, started once for every example."""

    def __init__(self, backend: Backend) -> None:
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reliability._batch_worker",
                    backend.name,
                    backend.target,
                ],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]

    def run(self, ops: list[dict[str, Any]]) -> list[Any]:
        """Run ``ops`` at once, TASKS per process; their results, in order."""
        shares = [ops[p * TASKS : (p + 1) * TASKS] for p in range(PROCESSES)]
        for proc, share in zip(self.procs, shares, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(share) + "\n")
            proc.stdin.flush()
        results: list[Any] = []
        for proc in self.procs:
            assert proc.stdout is not None
            answer = json.loads(proc.stdout.readline())
            assert "error" not in answer, answer["error"]
            results.extend(answer["results"])
        return results

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.close()
        for proc in self.procs:
            assert proc.wait(60) == 0


_examples = itertools.count()


def check_batch(
    events: list[Any], ops: list[dict[str, Any]], results: list[Any], model: list[Any]
) -> list[Any]:
    """Replay one session's events of a batch (version order) on ``model`` (a list of
    (seq, item)), checking them against the batch's calls; the model after them."""
    adds = Counter(json.dumps(op["items"]) for op in ops if op["call"] == "add")
    clears = sum(op["call"] == "clear" for op in ops)
    returned = Counter(
        json.dumps(r)
        for op, r in zip(ops, results, strict=True)
        if op["call"] == "pop" and r is not None
    )
    empty_pops = sum(
        1 for op, r in zip(ops, results, strict=True) if op["call"] == "pop" and r is None
    )
    removed: Counter[str] = Counter()
    was_empty = not model
    for event in events:
        match event.event:
            case SessionStarted():
                assert event.version == 1
            case ItemsAdded(items=raw):
                items = decode_raw_items(raw)
                adds[json.dumps(items)] -= 1
                base = event.version * MAX_ITEMS_PER_EVENT
                model = model + [(base + i, item) for i, item in enumerate(items)]
            case ItemPopped(seq=seq):
                assert model, f"v{event.version} pops from an empty session"
                assert model[-1][0] == seq, f"v{event.version} popped {seq}, not the newest item"
                removed[json.dumps(model[-1][1])] += 1
                model = model[:-1]
            case SessionCleared():
                clears -= 1
                model = []
            case other:
                raise AssertionError(f"unexpected event {other!r}")
        was_empty = was_empty or not model
    assert all(n == 0 for n in adds.values()), "an add is missing from the log, or twice in it"
    assert clears == 0, "clears and SessionCleared events differ"
    assert removed == returned, "the items pops returned are not those the log removed"
    assert not empty_pops or was_empty, "a pop found nothing while the session had items"
    return model


@pytest.fixture
def postgres(shared_backend: Backend) -> Backend:
    if shared_backend.name != "postgres":
        pytest.skip("the concurrent stateful test runs on PostgreSQL")
    return shared_backend


def test_concurrent_batches_match_the_model(postgres: Backend) -> None:
    loop = asyncio.new_event_loop()
    store = EventStore(postgres.target, projectors=[HISTORY])
    loop.run_until_complete(store.ensure_tables())
    workers = Workers(postgres)
    totals: Counter[str] = Counter()

    class ConcurrentSessions(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            n = next(_examples)
            self.sids = [f"e{n}s{s}" for s in range(SESSIONS)]
            self.models: list[list[Any]] = [[] for _ in range(SESSIONS)]
            self.versions = [0] * SESSIONS
            self.batch = 0

        @rule(batch=batches)
        def run_batch(self, batch: list[tuple[str, int, int]]) -> None:
            self.batch += 1
            ops: list[dict[str, Any]] = [
                {
                    "session": self.sids[s],
                    "call": call,
                    "items": [{"b": self.batch, "c": n, "i": i} for i in range(count)]
                    if call == "add"
                    else None,
                }
                for n, (call, s, count) in enumerate(batch)
            ]
            results = workers.run(ops)
            totals.update(op["call"] for op in ops)
            totals["batches"] += 1
            loop.run_until_complete(self.check(ops, results))

        async def check(self, ops: list[dict[str, Any]], results: list[Any]) -> None:
            for s, sid in enumerate(self.sids):
                mine = [(op, r) for op, r in zip(ops, results, strict=True) if op["session"] == sid]
                events = await store.read_stream(sid, after=self.versions[s])
                if events:
                    self.versions[s] = events[-1].version
                self.models[s] = check_batch(
                    events, [op for op, _ in mine], [r for _, r in mine], self.models[s]
                )
                read = await StoreSession(sid, store).get_items()
                assert read == [item for _, item in self.models[s]]
            report = await audit_database(store)
            assert report.ok, [str(f) for f in report.findings]
            totals["audits"] += 1

    try:
        run_state_machine_as_test(
            ConcurrentSessions,
            settings=settings(
                max_examples=sized(6, 10),
                stateful_step_count=sized(20, 25),
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )
    finally:
        workers.close()
        loop.run_until_complete(store.close())
        loop.close()
    record("concurrent_stateful", backend=postgres.name, **totals)
