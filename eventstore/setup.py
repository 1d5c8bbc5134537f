"""A store's log setup: its tables, their migrations, and the live projection set.

Before its first operation a store creates the tables (``create_tables=True``) or
checks that they exist at the schema revision it understands, migrating an older log
in place; adds the projections it was asked to keep to the database (see
:mod:`eventstore.registry`), rebuilding the tables of one whose shape changed; catches
up any projection that is behind; and reads the live set every append keeps current.
What it found is cached per database for the process (:class:`DatabaseState`), so a
second store on the same database, or the next operation, checks nothing again while
the live set's generation is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Connection, delete, insert, inspect, select, update

from . import registry, schema
from .backends.base import Runner
from .errors import (
    ArgumentTypeError,
    CancelledAfterCommit,
    IntegrityError,
    PersistenceError,
    SchemaError,
    StoreClosedError,
)
from .queries import replay_batch
from .records import BaseProjector
from .transactions import Transactions

log = logging.getLogger("convstore.eventstore")

# What a Projector has (eventstore.records.Projector), checked when a store is opened.
_PROJECTOR_PARTS = ("name", "schema_version", "metadata", "apply", "reset")


def check_projectors(projectors: object) -> tuple[BaseProjector, ...] | None:
    """``projectors`` as a tuple of adopted projectors (:func:`registry.adopt`), or
    ArgumentTypeError if it is not a list of projectors."""
    if projectors is None:
        return None
    if isinstance(projectors, str | bytes | dict) or not isinstance(projectors, Iterable):
        raise ArgumentTypeError(
            f"projectors must be a list of projectors (e.g. [HistoryProjector()]), not "
            f"{projectors!r}; leave it out to keep every projection installed with convstore"
        )
    found = tuple(projectors)
    for n, projector in enumerate(found):
        missing = [part for part in _PROJECTOR_PARTS if not hasattr(projector, part)]
        if missing or not isinstance(getattr(projector, "name", None), str):
            raise ArgumentTypeError(
                f"projectors[{n}] is not a projector: {projector!r} has no "
                f"{', '.join(missing) or 'string name'} (see eventstore.Projector)"
            )
    return tuple(registry.adopt(projector) for projector in found)


class LogSetup:
    """The tables of one store's database and the live projections it keeps current.

    ``live`` and ``generation`` are the live set an append applies (valid while the
    database's generation is the same); ``positions_first`` whether one of them reads
    positions (see :attr:`BaseProjector.reads_positions`).
    """

    def __init__(
        self,
        runner: Runner,
        transactions: Transactions,
        *,
        create_tables: bool,
        requested: tuple[BaseProjector, ...],
    ) -> None:
        self._runner = runner
        self._dialect = runner.dialect
        self._transactions = transactions
        self._state = transactions.state
        self._create_tables = create_tables
        self.requested = requested
        for projector in requested:  # every store of this process can keep it now
            registry.register_projector(projector, replace=False)
        self.live: tuple[BaseProjector, ...] = ()
        self.positions_first = True
        self.generation = -1
        self._live_names: frozenset[str] = frozenset()
        self._unknown: tuple[str, ...] = ()
        # The live set last found to cover this store's tables and projections (while
        # the database state still holds it, ensure has nothing to do).
        self._checked: registry.LiveSet | None = None
        self._components = {schema.SCHEMA_COMPONENT: schema.SCHEMA_VERSION} | {
            p.name: p.schema_version for p in requested
        }
        self._closed = False

    @property
    def projectors(self) -> tuple[BaseProjector, ...]:
        """The live set, once the database was opened; before that, the requested."""
        return self.live if self.generation >= 0 else self.requested

    def keep(self, projectors: Sequence[BaseProjector]) -> None:
        """Also keep ``projectors`` (added to the database by the next :meth:`ensure`)."""
        have = {p.name for p in self.requested}
        added = tuple(p for p in projectors if p.name not in have)
        if not added:
            return
        for projector in added:
            registry.register_projector(projector, replace=False)
        self.requested += added
        self._components.update({p.name: p.schema_version for p in added})
        self._checked = None

    def forget(self) -> None:
        """Check the database again at the next :meth:`ensure` (one quick read of the
        live set, as a new store does; preparing it again if that changed)."""
        self._checked = None
        self.generation = -1

    def close(self) -> None:
        """Refuse to prepare the database from now on (the store is closed)."""
        self._closed = True

    async def ensure(self) -> None:
        """Create the tables (``create_tables``) or check they exist and match; add the
        requested projections to the database and catch up any that are behind."""
        state = self._state
        live = state.live
        if live is not None and live is self._checked:  # nothing changed since the last call
            return
        if (
            live is not None
            and state.components.issuperset(self._components.items())
            and live.names.issuperset(p.name for p in self.requested)
        ):
            if live.generation == self.generation:
                self._checked = live
                return
            if not self._runner.revalidate or await self._still_valid(live):
                self._adopt(live)
                self._checked = live
                return
            state.components.clear()
            state.live = None
        if self._closed:
            raise StoreClosedError("this event store is closed")
        try:
            behind = await self._prepare()
            state.components.update(self._components.items())
            if behind:
                await self._catch_up(behind)
            state.live = await self._transactions.run(registry.live_set, write=False)
        except CancelledAfterCommit:
            # What committed is this store's preparation, not the caller's change, which
            # has not started: for the caller, nothing was written.
            raise asyncio.CancelledError() from None
        self._adopt(state.live)

    async def _prepare(self) -> list[BaseProjector]:
        """Run :meth:`_prepare_tx`. Another process preparing the same database at the
        same moment may insert the same registry rows first (on MySQL/MariaDB the schema
        lock is a named lock, released before the transaction commits): the duplicate
        means it is done, so preparing again finds it and goes on."""
        for attempt in range(3):
            try:
                return await self._transactions.run(self._prepare_tx, write=True)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.debug("tables prepared by another process meanwhile; checking again")
        raise AssertionError("unreachable")

    async def _still_valid(self, live: registry.LiveSet) -> bool:
        """Whether the database still has the live set ``live`` (one quick read)."""
        try:
            found = await self._transactions.run(registry.live_set, write=False, quick=True)
        except PersistenceError:  # e.g. the tables are gone: a new file at that path
            return False
        return found == live

    def _adopt(self, live: registry.LiveSet) -> None:
        """Apply the live set ``live`` from now on."""
        self._live_names = live.names
        self._resolve()
        self.generation = live.generation

    def _resolve(self) -> None:
        """The projector of each live name (the unknown ones noted)."""
        self.live, self._unknown = registry.resolve(self._live_names, self.requested)
        self.positions_first = any(p.reads_positions for p in self.live)

    def check_known(self) -> None:
        """Before writing: every live projection must be one this process can keep."""
        if self._unknown:  # registered since? then keep it from now on
            self._resolve()
            if self._unknown:
                raise registry.unknown_error(self._unknown)

    async def reload(self) -> None:
        """Read the live set again (an append found it changed)."""
        self._state.live = None
        await self.ensure()

    async def catch_up(
        self, projectors: Sequence[BaseProjector], progress: Callable[[int], None] | None
    ) -> None:
        """Replay the log into each of ``projectors`` that is behind and make it live."""
        await self.ensure()
        await self._catch_up(projectors, progress=progress)
        await self.reload()

    async def _catch_up(
        self,
        projectors: Sequence[BaseProjector],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """:func:`registry.catch_up` of each of ``projectors``."""
        dialect = self._dialect

        def replay(
            conn: Connection, projector: BaseProjector, after: int, limit: int | None
        ) -> int:
            # Batches (a limit) run while appends go on: they read only what no later
            # commit can precede. The last step (no limit) holds lock_log: all of it.
            bound = None if limit is None else dialect.read_horizon(conn)
            return replay_batch(conn, projector, after, limit, progress, bound)

        async def in_write_tx(fn: Callable[[Connection], int]) -> int:
            return await self._transactions.run(fn, write=True)

        for projector in projectors:
            await registry.catch_up(in_write_tx, dialect.lock_log, replay, projector)

    def _prepare_tx(self, conn: Connection) -> list[BaseProjector]:
        """Create, migrate and check the tables; return the known projections behind."""
        with self._dialect.schema_lock(conn):
            if self._create_tables:
                schema.metadata.create_all(conn)
                if conn.execute(select(schema.head.c.name)).first() is None:
                    conn.execute(insert(schema.head).values(name=schema.HEAD_ROW, position=0))
                if schema.SCHEMA_COMPONENT not in _stored_versions(conn):
                    conn.execute(
                        insert(schema.schema_versions).values(
                            component=schema.SCHEMA_COMPONENT, version=schema.SCHEMA_VERSION
                        )
                    )
            self._check_log_schema(conn)
            self._dialect.align_positions(conn)
            tracked = registry.read_tracking(conn)
            stored = _stored_versions(conn)
            for projector in self.requested:
                self._prepare_projection(conn, projector, tracked, stored)
            tracked = registry.read_tracking(conn)
            behind = [n for n, row in tracked.items() if not row.live]
            found, _ = registry.resolve(behind, self.requested)
            return list(found)

    def _prepare_projection(
        self,
        conn: Connection,
        projector: BaseProjector,
        tracked: dict[str, registry.TrackingRow],
        stored: dict[str, int],
    ) -> None:
        """Add ``projector`` to the database, or rebuild tables of an older shape."""
        found = stored.get(projector.name)
        if found is not None and found > projector.schema_version:
            raise SchemaError(
                f"{projector.name!r} tables are at schema version {found}, newer than this "
                f"release understands ({projector.schema_version}): upgrade convstore"
            )
        current = found == projector.schema_version and projector.name in tracked
        if current:
            return
        if not self._create_tables:
            raise SchemaError(
                f"the tables of the {projector.name!r} projection "
                + ("do not exist" if found is None else f"are at schema version {found}")
                + f": {self._create_tables_fix()}"
            )
        # A projection is disposable: tables of an older shape are dropped and rebuilt
        # from the log (the catch-up that follows fills them).
        if found is not None:
            projector.metadata.drop_all(conn)
        projector.metadata.create_all(conn)
        sv = schema.schema_versions
        conn.execute(delete(sv).where(sv.c.component == projector.name))
        conn.execute(insert(sv).values(component=projector.name, version=projector.schema_version))
        if projector.name in tracked:
            registry.set_behind(conn, projector.name, 0)
        else:
            registry.add_projection(conn, projector)

    def _create_tables_fix(self) -> str:
        """How to create missing tables, told apart for an engine the caller handed in:
        that is a long-lived application's engine, whose tables belong in its start-up."""
        if self._runner.handed_in:
            return (
                "a web application creates (or upgrades) them once at start-up, in its lifespan: "
                "`await sessions.create_tables(engine)` (docs/fastapi.md); a script can "
                "pass create_tables=True instead, or run 'convstore DB init' first"
            )
        return "open it with create_tables=True (or run 'convstore DB init') first"

    def _check_log_schema(self, conn: Connection) -> None:
        """Refuse a log that is missing, incomplete or newer; migrate an older one."""
        if not inspect(conn).has_table(schema.schema_versions.name):
            raise SchemaError(
                f"the convstore tables do not exist in this database: {self._create_tables_fix()}"
            )
        found = _stored_versions(conn).get(schema.SCHEMA_COMPONENT)
        version = schema.SCHEMA_VERSION
        if found is None:
            raise SchemaError("the convstore tables are incomplete: run 'convstore DB init'")
        if found > version:
            raise SchemaError(
                f"the log's tables are at schema version {found}, newer than this "
                f"release understands ({version}): upgrade convstore"
            )
        if found < version:
            if not self._create_tables:
                raise SchemaError(
                    f"the log's tables are at schema version {found} and need migrating to "
                    f"{version}: open with create_tables=True (or run 'convstore DB init')"
                )
            schema.migrate(conn, found)
            self._dialect.migrate_log(conn, found)
            sv = schema.schema_versions
            conn.execute(
                update(sv).where(sv.c.component == schema.SCHEMA_COMPONENT).values(version=version)
            )


def _stored_versions(conn: Connection) -> dict[str, int]:
    """The schema version of each component (the log, each projection)."""
    sv = schema.schema_versions
    return {
        row.component: row.version for row in conn.execute(select(sv.c.component, sv.c.version))
    }
