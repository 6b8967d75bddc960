"""`make cluster`: the production topology, throwaway, on loopback, in the foreground.

    nginx :PORT ──┬── gunicorn A ──┬── PgBouncer ── PostgreSQL primary
                  └── gunicorn B ──┴── PgBouncer ── PostgreSQL replica (streaming, pg_basebackup -R)

Installs nginx and pgbouncer from Debian when they are missing (as root, like
`make browser`), builds everything under one temporary directory with the
configuration files of deploy/ (their @...@ placeholders filled in), migrates
the schema, makes an admin with an API token, and prints one line,
`READY {json}`, saying where everything is. Ctrl-C or SIGTERM stops it all and
removes the directory. The tests (tests/test_cluster.py) start this same script.

The app runs as role `webapp`, whose statement_timeout and
idle_in_transaction_session_timeout are set on the role (PgBouncer in transaction
mode drops the per-connection `options` the app would send).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "deploy"
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL helpers live with the tests

from sqlalchemy import create_engine  # noqa: E402

import pg_cluster as pg  # noqa: E402
from server import free_port  # noqa: E402

PACKAGES = ("nginx", "pgbouncer")
ROLE, DATABASE = "webapp", "webapp"
ADMIN_EMAIL = "admin@cluster.example.org"
INSTANCES = 2
# On the role, as docs/production.md says: below gunicorn's 30 s worker timeout.
ROLE_SETTINGS = {"statement_timeout": "15s", "idle_in_transaction_session_timeout": "30s"}


def program(name: str) -> str | None:
    """Where Debian put `name` (sbin is not always in PATH), or None."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.access(p, os.X_OK)), None)


def install_missing() -> str | None:
    """Install nginx and pgbouncer from Debian if missing; None when both are there,
    else why they cannot be."""
    missing = [name for name in PACKAGES if program(name) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{' and '.join(missing)} missing, and installing them needs root (apt-get install {' '.join(missing)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(command)} failed: {error}"
        if result.returncode != 0:
            return f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    still = [name for name in PACKAGES if program(name) is None]
    return f"{' and '.join(still)} still missing after apt-get install" if still else None


def fill(template: str, target: Path, **values: object) -> Path:
    text = (HERE / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    left = re.findall(r"@[A-Z0-9_]+@", text)
    assert not left, f"{template}: {left} not filled in"
    target.write_text(text)
    return target


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


class Topology:
    """Everything make cluster runs, started in order and stopped in reverse."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="webapp-cluster-"))
        self.dir.chmod(0o755)  # PostgreSQL and PgBouncer run as postgres when we are root
        self.bouncer_dir = self.dir / "pgbouncer"
        self.bouncer_dir.mkdir()
        self.user = pg._owner()
        if self.user:
            shutil.chown(self.bouncer_dir, self.user)
        self.primary: pg.Cluster | None = None
        self.replica: pg.Cluster | None = None
        self.bouncers: list[tuple[int, subprocess.Popen]] = []
        self.instances: list[tuple[int, subprocess.Popen]] = []
        self.nginx: subprocess.Popen | None = None
        self.secret_key = secrets.token_hex(32)
        self.token = ""

    # -- start ----------------------------------------------------------------------

    def start(self) -> dict:
        bindir = pg.bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server programs are not installed (pg_config --bindir)")
        self.primary = pg.Cluster(bindir, parent=self.dir)
        self.primary.start()
        self._make_role()
        self.replica = self.primary.replica()
        self.replica.start()
        (self.bouncer_dir / "userlist.txt").write_text(f'"{ROLE}" ""\n"postgres" ""\n')
        for server in (self.primary, self.replica):
            self.bouncers.append(self._start_pgbouncer(server.port))
        primary_url, replica_url = (self.app_url(port) for port, _ in self.bouncers)
        env = self.app_env(primary_url, replica_url)
        self._flask(env, "db", "upgrade")
        self._flask(env, "create-admin", ADMIN_EMAIL, stdin=secrets.token_urlsafe(16) + "\n")
        self.token = self._flask(env, "create-token", ADMIN_EMAIL).strip().splitlines()[-1]
        for n in range(INSTANCES):
            self.instances.append(self._start_gunicorn(n, env))
        for n, (port, process) in enumerate(self.instances):
            self._wait_for(process, f"http://127.0.0.1:{port}/healthz", 60, f"gunicorn-{n}.log")
        self._start_nginx()
        assert self.nginx is not None
        self._wait_for(self.nginx, f"http://127.0.0.1:{self.port}/healthz", 20, "nginx-error.log")
        return self.info()

    def _wait_for(self, process: subprocess.Popen, url: str, seconds: float, log: str) -> None:
        """Until `url` answers 200; fails at once, with its log, if `process` exits."""
        wait_until(lambda: process.poll() is not None or answers(url), seconds, url)
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited (is the port free?):\n{self.log(log)[-3000:]}")

    def app_url(self, bouncer_port: int) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{bouncer_port}/{DATABASE}"

    def app_env(self, primary_url: str, replica_url: str) -> dict[str, str]:
        return {
            **os.environ,
            "APP_ENV": os.environ.get("APP_ENV", "production"),
            "SECRET_KEY": self.secret_key,  # one for every instance: cookies from one are good on the other
            "DATABASE_URL": primary_url,
            "DATABASE_REPLICA_URLS": replica_url,
            "TRUSTED_PROXIES": "1",  # nginx
            # An answer may take PgBouncer's query_wait_timeout (10 s, pgbouncer.ini) plus
            # the role's statement_timeout (15 s, ROLE_SETTINGS): the app's deadline waits
            # for both, and deadline.MARGIN more. Change it with either.
            "DB_STATEMENT_DEADLINE": "27",
            "HOST": "127.0.0.1",
        }

    def _make_role(self) -> None:
        assert self.primary is not None
        engine = create_engine(self.primary.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f"CREATE ROLE {ROLE} LOGIN")
                for name, value in ROLE_SETTINGS.items():
                    connection.exec_driver_sql(f"ALTER ROLE {ROLE} SET {name} = '{value}'")
                connection.exec_driver_sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        finally:
            engine.dispose()

    def _start_pgbouncer(self, pg_port: int) -> tuple[int, subprocess.Popen]:
        port = free_port()
        ini = self.bouncer_dir / f"pgbouncer-{port}.ini"
        fill("pgbouncer.ini", ini, PG_PORT=pg_port, PORT=port, RUN_DIR=self.bouncer_dir)
        with open(self.bouncer_dir / f"pgbouncer-{port}.err", "w") as err:
            process = subprocess.Popen([program("pgbouncer"), str(ini)], user=self.user, stdout=err, stderr=err)
        wait_until(lambda: _accepts(port) or process.poll() is not None, 10, f"PgBouncer on {port}")
        if process.poll() is not None:
            raise RuntimeError(f"PgBouncer exited:\n{self.log(f'pgbouncer/pgbouncer-{port}.log')}")
        return port, process

    def _flask(self, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def _start_gunicorn(self, n: int, env: dict[str, str]) -> tuple[int, subprocess.Popen]:
        port = free_port()
        metrics = self.dir / f"metrics-{n}"
        metrics.mkdir()
        with open(self.dir / f"gunicorn-{n}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT,
                env={**env, "PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the tests kill an instance whole
            )
        return port, process

    def _start_nginx(self) -> None:
        conf = fill(
            "nginx.conf",
            self.dir / "nginx.conf",
            RUN_DIR=self.dir,
            PORT=self.port,
            APP_PORT_1=self.instances[0][0],
            APP_PORT_2=self.instances[1][0],
        )
        self.nginx = subprocess.Popen(
            [program("nginx"), "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "nginx-error.log"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def info(self) -> dict:
        assert self.primary is not None and self.replica is not None
        return {
            "url": f"http://127.0.0.1:{self.port}",
            "dir": str(self.dir),
            "token": self.token,
            "admin": ADMIN_EMAIL,
            "bindir": str(self.primary.bindir),
            "primary": {"port": self.primary.port, "dir": str(self.primary.dir), "url": self.primary.url(DATABASE)},
            "replica": {"port": self.replica.port, "dir": str(self.replica.dir), "url": self.replica.url(DATABASE)},
            "pgbouncers": [port for port, _ in self.bouncers],
            "instances": [{"url": f"http://127.0.0.1:{port}", "pid": p.pid} for port, p in self.instances],
        }

    def log(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    # -- stop -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything that was started, front to back, and remove the directory."""
        if self.nginx is not None:
            _end(self.nginx, signal.SIGQUIT, 10)  # graceful: finishes what is in flight
        for _, process in self.instances:
            _end(process, signal.SIGTERM, 40, group=True)
        for _, process in self.bouncers:
            _end(process, signal.SIGINT, 10)  # safe shutdown: waits for transactions in flight
        for cluster in (self.replica, self.primary):
            if cluster is not None:
                cluster.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _end(process: subprocess.Popen, sig: int, seconds: float, group: bool = False) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig) if group else process.send_signal(sig)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
        process.wait()
    if group:  # workers a killed master left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    problem = install_missing()
    if problem:
        print(f"make cluster: {problem}", file=sys.stderr)
        return 1
    stopping, ready = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        stopping.set()
        if not ready.is_set():
            raise KeyboardInterrupt  # in the middle of starting: stop what has started

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    topology = Topology(port)
    try:
        info = topology.start()
        print(f"webapp on {info['url']} (nginx), two instances, PgBouncer, a primary and a streaming replica")
        print(f"API token of {ADMIN_EMAIL}: {info['token']}")
        print(f"everything lives in {info['dir']}; Ctrl-C stops and removes it")
        print("READY " + json.dumps(info), flush=True)
        ready.set()
        while not stopping.wait(0.5):
            pass
    except BaseException as error:
        if not stopping.is_set():
            print(f"make cluster: {error}", file=sys.stderr)
            for name in ("gunicorn-0.log", "gunicorn-1.log", "nginx-error.log"):
                if log := topology.log(name):
                    print(f"--- {name}\n{log[-3000:]}", file=sys.stderr)
            raise
    finally:
        print("stopping", flush=True)
        topology.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
