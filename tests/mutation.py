"""The mutation check: breaking the code that keeps a guarantee makes its tests fail.

    .venv/bin/python -m tests.mutation [--list] [--no-baseline] [NAME ...]

Copies the working tree to a temporary directory once. Then, for each breakage in
:data:`MUTATIONS` (or those whose names contain a NAME given), it replaces one exact
piece of code in the copy, runs the tests listed with it there, and puts the code
back. A breakage counts as caught only when pytest reports failed tests (exit status
1); one the tests let through, or a run that ends any other way (an error, a hang past
:data:`TIMEOUT`), makes the script exit 1. Before the breakages, each distinct set of
tests runs once on the unbroken copy and must pass with at least one test run
(``--no-baseline`` skips that): so a failure can only come from the breakage, and a
set whose backends are not configured cannot pass for a catch.

Each breakage is a file, the exact text it replaces and the text it puts instead. The
text must occur exactly once in the file; when the code moves, the script stops naming
the entry to update instead of testing something else. The server backends are those
of the suite (``CONVSTORE_TEST_POSTGRES_URL``, ``CONVSTORE_TEST_MYSQL_URL``: use a
database of your own). The list and the result of the last run are in
docs/reliability.md ("Mutation check").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds for one pytest run
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "*.db",
    "*.db-wal",
    "*.db-shm",
)


@dataclass(frozen=True)
class Mutation:
    """One deliberate breakage: in ``path``, ``old`` (exactly once) becomes ``new``;
    ``tests`` are the pytest arguments (files, ``-k`` expressions) that must fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


# -- the list --------------------------------------------------------------------------

CHAIN = "eventstore/chain.py"
HEADER = "[stream_id, version, event_id, event_type, schema_version, recorded_at]"
CHAIN_TESTS = ("tests/eventstore/test_chain.py",)


def _without(field: str) -> Mutation:
    fields = [f for f in HEADER.strip("[]").split(", ") if f != field]
    return Mutation(
        f"hash without {field}",
        CHAIN,
        f"_header.encode({HEADER})",
        f"_header.encode([{', '.join(fields)}])",
        CHAIN_TESTS,
    )


MUTATIONS: tuple[Mutation, ...] = (
    *(
        _without(field)
        for field in ("stream_id", "version", "event_id", "event_type", "schema_version")
    ),
    _without("recorded_at"),
    Mutation(
        "hash without payload",
        CHAIN,
        "digest.update(payload)",
        'digest.update(b"")',
        CHAIN_TESTS,
    ),
    Mutation(
        "hash without the previous hash",
        CHAIN,
        "hashlib.sha256(bytes.fromhex(previous))",
        "hashlib.sha256()",
        CHAIN_TESTS,
    ),
    Mutation(
        "SQLite waits for no lock (busy timeout 0)",
        "eventstore/backends/sqlite.py",
        "busy = 5.0 if lock_timeout is None else lock_timeout",
        "busy = 0.0",
        ("tests/reliability/test_failures.py", "-k", "blocked_writer and sqlite"),
    ),
    Mutation(
        # (0 would mean "no limit" on PostgreSQL: the shortest limit is the breakage)
        "PostgreSQL waits for no lock (lock_timeout 1 ms)",
        "eventstore/backends/postgres.py",
        "f\"SET lock_timeout = '{round(timeouts.lock_timeout * 1000)}ms'\"",
        "\"SET lock_timeout = '1ms'\"",
        ("tests/reliability/test_failures.py", "-k", "blocked_writer and postgres"),
    ),
    Mutation(
        "MariaDB waits for no lock (innodb_lock_wait_timeout 0)",
        "eventstore/backends/mysql.py",
        "seconds = max(1, math.ceil(timeouts.lock_timeout))",
        "seconds = 0",
        ("tests/reliability/test_failures.py", "-k", "blocked_writer and mysql"),
    ),
    Mutation(
        "pop removes two items (the one below goes too)",
        "projections/history_writer.py",
        '        key = {"sid": sid, "bid": bid, "q": seq}\n',
        '        key = {"sid": sid, "bid": bid, "q": seq}\n'
        '        below = self.sql.prev.first(self.conn, {**key, "lo": 0, "hi": seq})\n'
        "        if below is not None:\n"
        '            self.sql.delete_one.execute(self.conn, {**key, "q": below[0]})\n',
        (
            "tests/sessions/test_protocol.py",
            "tests/reliability/test_many_writers.py",
            "-k",
            "pop or (one and sqlite)",
        ),
    ),
    Mutation(
        "a cancelled add that committed says it did not (plain CancelledError)",
        "sessions/base.py",
        '            self._log_cancelled("add_items", cancelled)\n            raise\n',
        '            self._log_cancelled("add_items", cancelled)\n'
        "            raise asyncio.CancelledError() from None\n",
        ("tests/sessions/test_cancellation.py", "-k", "told_apart"),
    ),
    Mutation(
        "a cancelled server write that committed says it did not",
        "eventstore/backends/base.py",
        "        raise CancelledAfterCommit(work.result()) from None\n",
        "        raise asyncio.CancelledError() from None\n",
        ("tests/sessions/test_cancellation.py", "-k", "told_apart and (postgres or mysql)"),
    ),
    Mutation(
        "a withdrawn SQLite write says it committed (CancelledAfterCommit)",
        "eventstore/backends/base.py",
        "        if withdraw():\n            raise\n",
        "        if withdraw():\n            raise CancelledAfterCommit(None) from None\n",
        ("tests/sessions/test_cancellation.py", "-k", "told_apart and sqlite"),
    ),
    Mutation(
        "no version check (expected_version ignored)",
        "eventstore/writer.py",
        "        if not _matches(expected, current):\n",
        "        if False:\n",
        (
            "tests/eventstore/test_store.py",
            "tests/eventstore/test_concurrency.py",
            "-k",
            "wrong_expected_version or stale_writer or (four_processes and sqlite)",
        ),
    ),
    Mutation(
        # The stream's row read FOR UPDATE: what serialises the writers of one session on
        # PostgreSQL and MariaDB (SQLite's BEGIN IMMEDIATE locks the whole database).
        "no per-session lock (stream row read without FOR UPDATE)",
        "eventstore/batch.py",
        '_s.c.stream_id == bindparam("sid")).with_for_update()',
        '_s.c.stream_id == bindparam("sid"))',
        (
            "tests/sessions/test_concurrency.py",
            "-k",
            "pops_never_return_one_item_twice and (postgres or mysql)",
        ),
    ),
    Mutation(
        "a removal vouches for a tampered history (its hashes not checked)",
        "eventstore/removal.py",
        "        if link.event.version != link.expected_version or not link.sound:\n",
        "        if link.event.version != link.expected_version:\n",
        ("tests/test_audit.py", "-k", "chain_does_not_verify"),
    ),
    Mutation(
        "an import takes events whose hashes do not verify",
        "eventstore/imports.py",
        "    if event_hash(previous, event) != event.hash:\n",
        "    if False:\n",
        ("tests/test_transfer.py", "-k", "edited_file or refused_late"),
    ),
    Mutation(
        # PostgreSQL: the session's advisory lock, taken before the transaction has an id,
        # is what keeps positions in version order when several writers wait on a session.
        "no advisory lock first on PostgreSQL (positions can leave version order)",
        "eventstore/backends/postgres.py",
        "        keys = sorted({stream_lock_key(sid) for sid in stream_ids})\n",
        "        keys: list[int] = []\n",
        ("tests/reliability/test_requests.py", "-k", "postgres"),
    ),
    Mutation(
        "an envelope binds no timestamp (moving ts escapes expiry)",
        "sessions/crypto/envelope.py",
        "_encode([MARKER, FORMAT, session_id, key_id, ts, role])",
        "_encode([MARKER, FORMAT, session_id, key_id, role])",
        ("tests/sessions/test_encrypted.py", "-k", "every_change and timestamp"),
    ),
    Mutation(
        "an envelope's iv of any length opens (a byte moved from ct makes a second item)",
        "sessions/crypto/envelope.py",
        "        if len(nonce) != NONCE_BYTES:",
        "        if False:",
        ("tests/sessions/test_encrypted.py", "-k", "moved_into"),
    ),
    Mutation(
        "a wrapped data key is not bound to its session",
        "sessions/crypto/keys.py",
        '_encode(["convstore data key", FORMAT, stream_id, key_id, master_key_id])',
        '_encode(["convstore data key", FORMAT, key_id, master_key_id])',
        ("tests/sessions/test_encrypted.py", "-k", "wrapped_key_copied"),
    ),
    Mutation(
        "a compaction does not check that the items it replaces are still shown",
        "sessions/compaction.py",
        "if at is None or [seq for seq, _ in now[at : at + len(seqs)]] != seqs:",
        "if at is None:",
        ("tests/sessions/test_compaction.py", "-k", "items_changed"),
    ),
    Mutation(
        "the audit does not check a compaction's kept items",
        "projections/compaction_check.py",
        "if kept != [row.item for row in shown[at + event.replaced :]]:",
        "if False:",
        ("tests/sessions/test_compaction.py", "-k", "forged"),
    ),
    Mutation(
        "an idle SQLite store is taken over by a file made again at its path",
        "sessions/sqlite.py",
        "if store.closed or _identity(path) != kept.identity:",
        "if store.closed:",
        ("tests/sessions/test_idle_stores.py", "-k", "replaced_at_the_path"),
    ),
    Mutation(
        "a session's opened key is used whatever its key row now says (a shred unseen)",
        "sessions/crypto/keyring.py",
        "if self._opened is not None and self._opened[0] == row:",
        "if self._opened is not None:",
        ("tests/sessions/test_encrypted_keys.py", "-k", "reuses_the_opened_key"),
    ),
    Mutation(
        "a sliced read cuts each item one byte early out of its payload",
        "projections/history_queries.py",
        "func.substr(e.c.payload, newest.c.item_at + 1, newest.c.item_size)",
        "func.substr(e.c.payload, newest.c.item_at, newest.c.item_size)",
        ("tests/projections/test_item_arrays.py", "-k", "match or sliced or whole_read"),
    ),
    Mutation(
        "a whole read of a long history stops at the sliced read's bound (items lost)",
        "projections/history_reads.py",
        "        if limit is None and items is not None and len(items) >= WHOLE_SLICED:",
        "        if False:",
        ("tests/projections/test_item_arrays.py", "-k", "whole_read"),
    ),
)


# -- running it ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int | None  # pytest's exit status; None: timed out
    summary: str  # pytest's closing line
    failed: tuple[str, ...]  # ids of the failed tests
    seconds: float
    output: str = ""

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", self.summary)}


def run_tests(copy: Path, tests: tuple[str, ...]) -> Outcome:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return Outcome(None, f"no result within {TIMEOUT} s", (), time.monotonic() - started)
    lines = done.stdout.strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if " in " in line), "")
    failed = tuple(line.split()[1] for line in lines if line.startswith("FAILED "))
    output = done.stdout + done.stderr
    return Outcome(done.returncode, summary, failed, time.monotonic() - started, output)


def apply(copy: Path, mutation: Mutation) -> str:
    """Break the copy; return the file's original text (to put back)."""
    path = copy / mutation.path
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: its text occurs {found} times in {mutation.path} "
            f"(expected once): update the entry in tests/mutation.py\n{mutation.old}"
        )
    path.write_text(text.replace(mutation.old, mutation.new))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only the breakages whose names contain these")
    parser.add_argument("--list", action="store_true", help="list the breakages and stop")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbroken runs")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.names or any(n in m.name for n in args.names)]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.path} -> pytest {' '.join(m.tests)}")
        return 0
    started = time.monotonic()
    problems = 0
    with tempfile.TemporaryDirectory(prefix="convstore-mutation-") as tmp:
        copy = Path(tmp) / "convstore"
        shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
        for m in chosen:  # every entry still finds its code before anything runs
            (copy / m.path).write_text(apply(copy, m))
        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in chosen):
                base = run_tests(copy, tests)
                ok = base.status == 0 and base.counts.get("passed", 0) > 0
                print(f"baseline {' '.join(tests)}: {base.summary} ({base.seconds:.0f} s)")
                if not ok:
                    print("  FAILED: the unbroken code must pass these tests (and run some)")
                    print("\n".join(base.output.splitlines()[-40:]), file=sys.stderr)
                    problems += 1
        print("\n| breakage | file | tests failed | first failed | time |")
        print("|---|---|---|---|---|")
        for m in chosen:
            original = apply(copy, m)
            try:
                result = run_tests(copy, m.tests)
            finally:
                (copy / m.path).write_text(original)
            counts = result.counts
            caught = result.status == 1 and counts.get("failed", 0) > 0
            ran = counts.get("failed", 0) + counts.get("passed", 0)
            verdict = f"{counts.get('failed', 0)} of {ran}" if caught else "NOT CAUGHT"
            first = result.failed[0].split("::")[-1] if result.failed else result.summary
            print(f"| {m.name} | `{m.path}` | {verdict} | `{first}` | {result.seconds:.0f} s |")
            if not caught:
                problems += 1
                print("\n".join(result.output.splitlines()[-40:]), file=sys.stderr)
    total = time.monotonic() - started
    print(f"\n{len(chosen)} breakages, {problems} problem(s), {total:.0f} s in all")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
