"""Writers SIGKILLed at random moments lose no acknowledged add and leave no partial one.

Several writer processes add items (mostly a few at a time, one add in ten 300 at a
time, so kills land inside long appends too) to their own session and to one shared
session, each printing a line once ``add_items`` has returned. The parent kills each
at a random moment, starts another, and at the end checks: every acknowledged add is
present whole and once; every add is all-or-nothing; no item appears twice; every
stream's hash chain verifies and the projections equal a replay of the log.

``CONVSTORE_LONG_TESTS=1`` raises the kills to 50 on SQLite and PostgreSQL, 20 on MariaDB.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sessions import StoreSession
from sessions.base import HISTORY

from ..conftest import Backend
from ._figures import record
from ._support import audit, sized
from ._writer import crash_plan

REPO = Path(__file__).resolve().parents[2]
AT_ONCE = 4


class Writer:
    """One writer process and the adds it acknowledged."""

    def __init__(self, backend: Backend, worker: int, seed: int) -> None:
        self.worker = worker
        self.seed = seed
        self.acked: list[tuple[str, int, int]] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability._writer",
                "crash",
                backend.name,
                backend.target,
                str(worker),
                str(seed),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.endswith("\n"):  # killed while printing: not known as acknowledged
                break
            session, n, count = line.split()
            self.acked.append((session, int(n), int(count)))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.process.stdout.close()
        errors = self.process.stderr.read()
        self.process.stderr.close()
        assert self.process.returncode == -signal.SIGKILL, errors


def run_writers(backend: Backend, kills: int, seed: int) -> list[Writer]:
    """Start writers, killing each at a random moment, until ``kills`` kills are done."""
    rng = random.Random(seed)
    done: list[Writer] = []
    running: list[tuple[Writer, float]] = []
    started = 0
    while len(done) < kills:
        while len(running) < AT_ONCE and started < kills:
            running.append((Writer(backend, started, rng.randrange(2**32)), 0.0))
            started += 1
        time.sleep(0.02)
        for entry in list(running):
            writer, deadline = entry
            if deadline == 0.0:
                if writer.acked:  # connected and writing: kill it some time soon
                    running[running.index(entry)] = (writer, time.monotonic() + rng.uniform(0, 0.4))
                elif writer.process.poll() is not None:
                    raise AssertionError(
                        writer.process.stderr.read() if writer.process.stderr else ""
                    )
                continue
            if time.monotonic() >= deadline:
                writer.kill()
                running.remove(entry)
                done.append(writer)
    return done


async def check(backend: Backend, writers: list[Writer]) -> dict[str, int]:
    store = backend.store(projectors=(HISTORY,))
    items: dict[str, list[Any]] = {}
    for info in await store.list_streams():
        items[info.stream_id] = await StoreSession(info.stream_id, store).get_items()
    per_add: Counter[tuple[str, int, int]] = Counter()
    for sid, found in items.items():
        keys = [(item["w"], item["n"], item["i"]) for item in found]
        assert len(keys) == len(set(keys)), f"{sid}: an item is stored twice"
        per_add.update((sid, w, n) for w, n, _ in keys)
    acked_items = 0
    made: set[tuple[str, int, int]] = set()
    for writer in writers:
        # What the writer meant to add, replayed from its seed: every add it
        # acknowledged, then the one it was making when it was killed.
        plan = list(islice(crash_plan(writer.worker, writer.seed), len(writer.acked) + 1))
        assert writer.acked == plan[:-1], f"w{writer.worker} printed adds it did not plan"
        for sid, n, count in writer.acked:
            assert per_add[(sid, writer.worker, n)] == count, f"acknowledged add lost: {sid} {n}"
            acked_items += count
        sid, n, count = plan[-1]  # unacknowledged: whole (committed before the kill) or absent
        found = per_add[(sid, writer.worker, n)]
        assert found in (0, count), f"partial add {sid} w{writer.worker} n{n}: {found} of {count}"
        made.update((sid, writer.worker, n) for sid, n, _ in plan)
    assert set(per_add) <= made, f"adds no writer made: {sorted(set(per_add) - made)}"
    events = await audit(store)
    return {
        "acknowledged_adds": sum(len(w.acked) for w in writers),
        "items_checked": acked_items,
        "events_audited": events,
    }


async def test_sigkilled_writers_lose_nothing_acknowledged(shared_backend: Backend) -> None:
    await shared_backend.store(projectors=(HISTORY,)).ensure_tables()
    # 50+ kills on SQLite and PostgreSQL; MariaDB gets fewer to keep CI short.
    kills = sized(10, 20 if shared_backend.name == "mysql" else 50)
    seed = int(os.environ.get("CONVSTORE_CRASH_SEED", random.randrange(2**32)))
    writers = await asyncio.to_thread(run_writers, shared_backend, kills, seed)
    figures = await check(shared_backend, writers)
    record("sigkill", backend=shared_backend.name, kills=len(writers), seed=seed, **figures)
