"""PostgreSQL as it runs in production: behind PgBouncer, with a hot standby, through
restarts and failover, on clusters these tests build for themselves
(tests/production/cluster.py).

They run when ``CONVSTORE_TEST_PG_CLUSTER=1`` (and always under ``CI=true``, where a
cluster that cannot be built fails them); otherwise they skip, saying so. They need
PostgreSQL 15's server binaries (``/usr/lib/postgresql/15/bin``, or
``CONVSTORE_PG_BIN``) and ``pgbouncer``; as root they run the servers as ``postgres``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ..conftest import IN_CI
from .cluster import Cluster

ENV = "CONVSTORE_TEST_PG_CLUSTER"
ENABLED = IN_CI or os.environ.get(ENV, "") == "1"
OFF = (
    f"production cluster tests are off: set {ENV}=1 to run them (they build PostgreSQL "
    "clusters and a PgBouncer of their own on free local ports)"
)


def build_cluster() -> Cluster:
    """A started cluster, or skip (fail when they were asked for) saying why."""
    if not ENABLED:
        pytest.skip(OFF)
    cluster = Cluster()
    try:
        cluster.start()
    except Exception as error:
        pytest.fail(f"cannot build the PostgreSQL cluster ({ENV}=1 or CI=true): {error}")
    return cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One primary, streaming standby and PgBouncer for the whole run."""
    made = build_cluster()
    yield made
    made.stop()


@dataclass(frozen=True)
class Database:
    """A fresh database of a cluster, by each way of reaching it."""

    name: str
    direct: str  # the primary
    pooled: str  # through PgBouncer, with the option convstore needs there
    bouncer: str  # through PgBouncer, as a user who did not set that option would
    standby: str  # the hot standby


def new_database(cluster: Cluster) -> Database:
    name = f"t_{uuid.uuid4().hex[:10]}"
    cluster.primary.sql(f"CREATE DATABASE {name}", database="postgres")
    bouncer = f"postgresql://postgres@127.0.0.1:{cluster.bouncer_port}/{name}"
    return Database(
        name=name,
        direct=cluster.primary.url(name),
        pooled=f"{bouncer}?pooler=transaction",
        bouncer=bouncer,
        standby=cluster.standby.url(name),
    )


@pytest.fixture
def database(cluster: Cluster) -> Database:
    """An empty database on the session's cluster."""
    return new_database(cluster)
