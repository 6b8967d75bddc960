"""A throwaway PostgreSQL cluster of the tests' own, for tests that stop and start
the database under a running server, and its streaming replicas (`replica()`,
pg_basebackup -R). The shared server is never touched. deploy/cluster.py builds
`make cluster`'s primary and replica with it too.

initdb and pg_ctl come from `pg_config --bindir`. PostgreSQL refuses to run as
root, so as root the cluster belongs to the `postgres` system user (or `nobody`).
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine

from server import free_port


def bindir() -> Path | None:
    """Where initdb and pg_ctl live, or None when PostgreSQL is not installed."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        candidates.append(Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()))
    # Debian keeps the server's programs out of PATH, one directory per major version.
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        versions, key=lambda p: [int(n) for n in p.parent.name.split(".") if n.isdigit()], reverse=True
    )
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _owner() -> str | None:
    """The user to run PostgreSQL as: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no postgres or nobody user to run PostgreSQL as")


class Cluster:
    """initdb in a temporary directory; start, stop and restart on a free port.

    With `primary`, a streaming replica of that running cluster instead: a base
    backup with the standby settings written in (pg_basebackup -R)."""

    def __init__(self, bindir: Path, primary: "Cluster | None" = None, parent: Path | None = None) -> None:
        self.bindir = bindir
        self.user = _owner()
        self.dir = Path(tempfile.mkdtemp(prefix="webapp-pg-", dir=parent))
        if self.user:
            shutil.chown(self.dir, self.user)
        self.data = self.dir / "data"
        self.port = free_port()
        if primary is None:
            self._run(
                "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"
            )
        else:
            self._run(
                "pg_basebackup", "-D", self.data, "-R", "-X", "stream", "--no-sync", "-c", "fast",
                "-h", "127.0.0.1", "-p", primary.port, "-U", "postgres",
            )  # fmt: skip

    @classmethod
    def attach(cls, bindir: Path, directory: Path, port: int) -> "Cluster":
        """A cluster another process made (deploy/cluster.py), to stop and start it."""
        cluster = cls.__new__(cls)
        cluster.bindir, cluster.user, cluster.dir, cluster.port = bindir, _owner(), Path(directory), port
        cluster.data = cluster.dir / "data"
        return cluster

    def replica(self) -> "Cluster":
        """A new streaming replica of this (running) cluster, not started yet."""
        return Cluster(self.bindir, primary=self, parent=self.dir.parent)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
            "-c fsync=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.dir / "postgresql.log", "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; "fast" disconnects clients and rolls their transactions back."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        return (
            subprocess.run(
                [self.bindir / "pg_ctl", "-D", self.data, "status"], user=self.user, capture_output=True
            ).returncode
            == 0
        )

    def create_database(self, name: str) -> str:
        """A new, empty database in this cluster; returns its URL."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        if self.is_running():
            self.stop(mode="immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "postgresql.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, program: str, *args) -> None:
        started = time.monotonic()
        result = subprocess.run(
            [self.bindir / program, *map(str, args)], user=self.user, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed after {time.monotonic() - started:.1f}s:\n{result.stdout}{result.stderr}{self.log()}"
            )
