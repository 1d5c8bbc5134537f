"""Throwaway PostgreSQL clusters behind PgBouncer, for the production tests.

:class:`Cluster` builds, under a temporary directory owned by the ``postgres`` OS
user, a primary (``initdb``), a hot standby streaming from it (``pg_basebackup -R``)
and a PgBouncer in transaction pooling mode in front of the primary, each on a free
port of 127.0.0.1, all with ``fsync`` on. It restarts, stops and promotes them on
request, points PgBouncer at another server (``RELOAD``), and removes everything in
:meth:`Cluster.stop`. PostgreSQL and PgBouncer refuse to run as root, so every
server command runs as ``postgres`` when this process is root.

It never touches any other server: the clusters are its own, on ports it checked
were free. As a script it brings a cluster up and keeps it until interrupted, e.g.
for ``benchmarks/pooler.py``::

    python tests/production/cluster.py            # prints the URLs; Ctrl-C removes it
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(os.environ.get("CONVSTORE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
DATABASE = "convstore"
STANDBY_NAME = "standby1"

_PRIMARY_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 5
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
max_connections = 80
shared_buffers = '32MB'
log_min_messages = warning
log_line_prefix = '%m [%p] '
"""

_BOUNCER_INI = """
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 400
default_pool_size = {pool_size}
server_login_retry = 1
server_connect_timeout = 5
query_wait_timeout = 30
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


class ClusterError(RuntimeError):
    """A step of setting up or changing a cluster failed (its output is in the message)."""


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens on it at 127.0.0.1, else a free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise ClusterError("no free port on 127.0.0.1")


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run a command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam("postgres")
    return {
        "user": owner.pw_uid,
        "group": owner.pw_gid,
        "extra_groups": [],
        "cwd": "/",
        "env": {"PATH": os.environ.get("PATH", ""), "HOME": owner.pw_dir, "LC_ALL": "C"},
    }


def _run(argv: list[str], *, timeout: float = 120) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **_as_postgres()
    )
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@dataclass
class Server:
    """One PostgreSQL server of the cluster: its data directory and port."""

    name: str
    data: Path
    port: int
    log: Path

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str, timeout: float = 120) -> str:
        return _run([str(BIN / "pg_ctl"), "-D", str(self.data), *args], timeout=timeout)

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def running(self) -> bool:
        done = subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
            **_as_postgres(),
        )
        return done.returncode == 0

    def sql(self, statement: str, database: str = DATABASE) -> str:
        """Run one statement with psql; its output, unaligned, without headers."""
        return _run(
            [
                str(BIN / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                statement,
            ]
        ).strip()


class Cluster:
    """A primary, a streaming hot standby and a PgBouncer (transaction pooling), of
    this process's own, under one temporary directory."""

    def __init__(
        self,
        *,
        primary_port: int = 5440,
        standby_port: int = 5441,
        bouncer_port: int = 6440,
        pool_size: int = 10,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="convstore-cluster-"))
        owner = pwd.getpwnam("postgres")
        if os.geteuid() == 0:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o755)
        self.primary = Server(
            "primary", self.root / "primary", free_port(primary_port), self.root / "primary.log"
        )
        self.standby = Server(
            "standby", self.root / "standby", free_port(standby_port), self.root / "standby.log"
        )
        self.bouncer_port = free_port(bouncer_port)
        self.pool_size = pool_size
        self._bouncer: subprocess.Popen[bytes] | None = None

    # -- URLs ----------------------------------------------------------------------

    @property
    def primary_url(self) -> str:
        return self.primary.url()

    @property
    def standby_url(self) -> str:
        return self.standby.url()

    @property
    def bouncer_url(self) -> str:
        """PgBouncer's address, without the ``pooler`` option convstore needs there."""
        return f"postgresql://postgres@127.0.0.1:{self.bouncer_port}/{DATABASE}"

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Create and start the primary, the standby and PgBouncer."""
        try:
            self._start_primary()
            self.make_standby()
            self.start_bouncer(self.primary.port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server of the cluster and remove its directory. Idempotent."""
        self.stop_bouncer()
        for server in (self.standby, self.primary):
            if server.data.exists() and server.running():
                with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                    server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _start_primary(self) -> None:
        _run(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.primary.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        conf = _PRIMARY_CONF.format(port=self.primary.port, sockets=self.root)
        with (self.primary.data / "postgresql.conf").open("a") as out:
            out.write(conf)
        self.primary.start()
        self.primary.sql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def make_standby(self) -> None:
        """A new standby from a base backup of the primary, streaming from it."""
        if self.standby.data.exists():
            if self.standby.running():
                self.standby.stop("immediate")
            _run(["rm", "-rf", str(self.standby.data)])
        _run(
            [
                str(BIN / "pg_basebackup"),
                "-D",
                str(self.standby.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
                "-d",
                f"application_name={STANDBY_NAME}",
            ]
        )
        with (self.standby.data / "postgresql.conf").open("a") as out:
            out.write(f"port = {self.standby.port}\n")
        self.standby.start()
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 30) -> None:
        """Until the primary reports the standby streaming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.primary.sql(
                f"SELECT state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
            )
            if state == "streaming":
                return
            time.sleep(0.1)
        raise ClusterError("the standby did not start streaming")

    # -- PgBouncer -----------------------------------------------------------------

    def _write_bouncer_config(self, server_port: int) -> Path:
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            _BOUNCER_INI.format(
                server_port=server_port,
                port=self.bouncer_port,
                directory=self.root,
                pool_size=self.pool_size,
            )
        )
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        return ini

    def start_bouncer(self, server_port: int) -> None:
        ini = self._write_bouncer_config(server_port)
        self._bouncer = subprocess.Popen(
            [PGBOUNCER, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_as_postgres(),
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._bouncer.poll() is not None:
                log = (self.root / "pgbouncer.log").read_text(errors="replace")
                raise ClusterError(f"pgbouncer exited: {log}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.bouncer_port)) == 0:
                    return
            time.sleep(0.05)
        raise ClusterError("pgbouncer did not start listening")

    def point_bouncer(self, server_port: int) -> None:
        """Send PgBouncer's clients to the server on ``server_port`` from now on
        (the configuration rewritten, then ``RELOAD``): what a failover does."""
        self._write_bouncer_config(server_port)
        self.bouncer_admin("RELOAD")

    def bouncer_admin(self, command: str) -> str:
        """A command of PgBouncer's admin console (``SHOW POOLS``, ``RELOAD`` …)."""
        return _run(
            [
                str(BIN / "psql"),
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.bouncer_port),
                "-U",
                "postgres",
                "-d",
                "pgbouncer",
                "-c",
                command,
            ]
        ).strip()

    def stop_bouncer(self) -> None:
        bouncer, self._bouncer = self._bouncer, None
        if bouncer is None or bouncer.poll() is not None:
            return
        bouncer.terminate()  # SIGTERM: PgBouncer's immediate shutdown
        try:
            bouncer.wait(10)
        except subprocess.TimeoutExpired:
            bouncer.kill()
            bouncer.wait(10)

    # -- replication -----------------------------------------------------------------

    def set_synchronous(self, synchronous: bool) -> None:
        """Make the primary wait for the standby at every commit (or not), by
        ``synchronous_standby_names`` and a configuration reload."""
        names = f"'{STANDBY_NAME}'" if synchronous else "''"
        self.primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = {names}")
        self.primary.sql("SELECT pg_reload_conf()")
        wanted = STANDBY_NAME if synchronous else ""
        deadline = time.monotonic() + 10
        while self.primary.sql("SHOW synchronous_standby_names") != wanted:
            if time.monotonic() > deadline:
                raise ClusterError("synchronous_standby_names was not reloaded")
            time.sleep(0.05)
        if synchronous:
            while (
                self.primary.sql(
                    "SELECT sync_state FROM pg_stat_replication "
                    f"WHERE application_name = '{STANDBY_NAME}'"
                )
                != "sync"
            ):
                if time.monotonic() > deadline:
                    raise ClusterError("the standby did not become synchronous")
                time.sleep(0.05)

    def replay_lag_bytes(self) -> int:
        """How many bytes of WAL the primary has written that the standby has not
        replayed yet."""
        return int(
            self.primary.sql(
                "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint "
                f"FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
            )
            or 0
        )

    def promote_standby(self) -> None:
        """Promote the standby (``pg_ctl promote``, waiting until it accepts writes)."""
        self.standby.pg_ctl("promote", "-w", "-t", "60")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # (the finally below cleans up)
    cluster = Cluster()
    cluster.start()
    print(f"primary  {cluster.primary_url}")
    print(f"standby  {cluster.standby_url}")
    print(f"pgbouncer {cluster.bouncer_url}?pooler=transaction")
    print(f"directory {cluster.root} (removed on Ctrl-C)")
    sys.stdout.flush()
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
