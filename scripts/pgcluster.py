#!/usr/bin/env python3
"""Throwaway PostgreSQL clusters for tests and local experiments.

A :class:`Cluster` owns one base directory that holds everything belonging
to the cluster::

    <base_dir>/                 socket directory (``unix_socket_directories``)
    <base_dir>/data/            PGDATA created by ``initdb``
    <base_dir>/postgres.log     server log (``pg_ctl -l``)
    <base_dir>/pgcluster.json   state file, lets another process attach/stop

The server listens on ``127.0.0.1`` only, on a free TCP port, with ``trust``
authentication for local and 127.0.0.1 connections, ``fsync=off`` and an
empty ``shared_preload_libraries``.  The superuser is ``postgres``.

PostgreSQL refuses to run as root.  When the current effective uid is 0 the
OS user ``postgres`` is used (created with ``useradd`` if missing), the base
directory is chowned to it, and ``initdb``/``pg_ctl`` run via
``runuser -u postgres --``.  Otherwise they run as the current user.

Library use::

    with Cluster() as pg:
        pg.createdb("t")
        conn = psycopg.connect(pg.dsn("t"))

CLI use (the server keeps running between the two calls)::

    eval "$(python3 scripts/pgcluster.py start --dir /tmp/pgc)"   # PGHOST=... PGPORT=...
    python3 scripts/pgcluster.py stop --dir /tmp/pgc

Only the Python standard library is used; Python >= 3.9 is enough.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Optional, Sequence, Type

__all__ = ["Cluster", "ClusterError", "default_pg_bin", "free_port", "main"]

#: Fallback binary directory when ``pg_config`` is unavailable.
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
#: Name of both the OS user (when running as root) and the DB superuser.
SUPERUSER = "postgres"
STATE_FILE = "pgcluster.json"
LOG_FILE = "postgres.log"
DATA_SUBDIR = "data"
#: Seconds to wait for commands such as ``initdb`` and ``pg_ctl``.
COMMAND_TIMEOUT = 120


class ClusterError(RuntimeError):
    """Raised when the cluster cannot be created, started or stopped."""


def default_pg_bin() -> str:
    """Return the PostgreSQL binary directory to use.

    Order: ``$PGAGENT_PG_BIN``, ``pg_config --bindir`` (if it contains
    ``initdb``), then :data:`DEFAULT_PG_BIN`.
    """
    env = os.environ.get("PGAGENT_PG_BIN")
    if env:
        return env
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True,
                check=True, timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and os.path.isfile(os.path.join(out, "initdb")):
            return out
    return DEFAULT_PG_BIN


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on *host* that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _conninfo_value(value: str) -> str:
    """Quote *value* for a libpq ``key=value`` conninfo string if needed."""
    if value and not any(c in value for c in " '\\\t\n"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ensure_os_user(name: str) -> tuple[int, int]:
    """Return ``(uid, gid)`` of OS user *name*, creating a system user if absent."""
    import pwd  # Unix only; imported lazily to keep module import cheap

    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--user-group",
             "--shell", "/usr/sbin/nologin", name],
            check=True, capture_output=True, timeout=COMMAND_TIMEOUT,
        )
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


class Cluster:
    """A temporary PostgreSQL cluster listening on 127.0.0.1 and a socket dir.

    :param base_dir: Directory holding the whole cluster.  ``None`` creates a
        fresh ``/tmp/pgagent-cluster-XXXX``.  An explicit directory must be
        missing or empty (it is created); it is deleted by :meth:`stop` unless
        *keep* is true, so never pass a directory holding other data.
    :param pg_bin: Directory with ``initdb``, ``pg_ctl``, ``psql``...;
        ``None`` means :func:`default_pg_bin`.
    :param keep: Keep *base_dir* (data and log) after :meth:`stop`.
    :param settings: Extra server settings (GUC name to value), written to
        the cluster's configuration after the defaults (e.g. a benchmark's
        ``{"shared_buffers": "3GB"}``).
    """

    def __init__(
        self,
        base_dir: Optional[str] = None,
        pg_bin: Optional[str] = None,
        *,
        keep: bool = False,
        settings: Optional[dict[str, str]] = None,
    ) -> None:
        self.settings: dict[str, str] = dict(settings or {})
        self.pg_bin: str = pg_bin or default_pg_bin()
        self.keep: bool = keep
        self._explicit_dir = base_dir is not None
        self._base: Optional[Path] = Path(base_dir).resolve() if base_dir else None
        self._port: Optional[int] = None
        self._running = False
        self._as_root = os.geteuid() == 0

    # ------------------------------------------------------------------ paths
    @property
    def base_dir(self) -> str:
        """The cluster's base directory (created by :meth:`start`)."""
        if self._base is None:
            raise ClusterError("cluster has no directory yet; call start() first")
        return str(self._base)

    @property
    def data_dir(self) -> str:
        """PGDATA of the cluster."""
        return os.path.join(self.base_dir, DATA_SUBDIR)

    @property
    def log_path(self) -> str:
        """Path of the server log file."""
        return os.path.join(self.base_dir, LOG_FILE)

    @property
    def host(self) -> str:
        """The Unix socket directory (use as libpq ``host``)."""
        return self.base_dir

    @property
    def port(self) -> int:
        """The TCP port (also the socket's port number)."""
        if self._port is None:
            raise ClusterError("cluster is not started")
        return self._port

    @property
    def tcp_host(self) -> str:
        """The TCP address the server listens on."""
        return "127.0.0.1"

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        pid = self.pid
        return pid is not None and _pid_alive(pid)

    @property
    def pid(self) -> Optional[int]:
        """PID of the postmaster according to ``postmaster.pid``, or ``None``."""
        if self._base is None:
            return None
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid"), encoding="utf-8") as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, *, tcp: bool = False) -> str:
        """Return a libpq conninfo string for *dbname* as *user*.

        Connects over the Unix socket, or over ``127.0.0.1`` when *tcp* is true.
        """
        host = self.tcp_host if tcp else self.host
        parts = {"host": host, "port": str(self.port), "dbname": dbname, "user": user}
        return " ".join(f"{k}={_conninfo_value(v)}" for k, v in parts.items())

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """Return ``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE`` for this cluster."""
        return {"PGHOST": self.host, "PGPORT": str(self.port),
                "PGUSER": SUPERUSER, "PGDATABASE": dbname}

    # ---------------------------------------------------------------- helpers
    def _bin(self, name: str) -> str:
        path = os.path.join(self.pg_bin, name)
        if not os.path.isfile(path):
            raise ClusterError(f"{name} not found in {self.pg_bin}")
        return path

    def _run_server_cmd(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server-side command (initdb, pg_ctl) as the non-root owner."""
        cmd = list(argv)
        if self._as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
        proc = subprocess.run(
            cmd, cwd=self.base_dir, env=env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(shlex.quote(c) for c in cmd)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = f.readlines()[-lines:]
        except (OSError, ClusterError):
            return ""
        return "--- server log tail ---\n" + "".join(tail)

    def _prepare_dir(self) -> None:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="pgagent-cluster-"))
        elif self._base.exists():
            if any(self._base.iterdir()):
                raise ClusterError(f"{self._base} is not empty; refusing to use it")
        else:
            self._base.mkdir(parents=True)
        os.chmod(self._base, 0o755)
        if self._as_root:
            uid, gid = _ensure_os_user(SUPERUSER)
            os.chown(self._base, uid, gid)
            probe = subprocess.run(["runuser", "-u", SUPERUSER, "--", "test", "-w", str(self._base)],
                                   capture_output=True, timeout=COMMAND_TIMEOUT)
            if probe.returncode != 0:
                raise ClusterError(
                    f"OS user {SUPERUSER!r} cannot write {self._base}; "
                    "choose a directory whose parents are world-traversable")

    def _write_config(self, port: int) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": self.base_dir,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_preload_libraries": "",
            "logging_collector": "off",
            "max_connections": "100",
            **self.settings,
        }
        lines = ["# written by scripts/pgcluster.py"]
        for key, value in settings.items():
            lines.append(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'")
        conf = Path(self.data_dir, "pgcluster.conf")
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if self._as_root:
            st = os.stat(self.data_dir)
            os.chown(conf, st.st_uid, st.st_gid)

    def _write_hba(self) -> None:
        hba = Path(self.data_dir, "pg_hba.conf")
        hba.write_text(
            "# written by scripts/pgcluster.py: trust local + loopback\n"
            "local all         all                 trust\n"
            "local replication all                 trust\n"
            "host  all         all   127.0.0.1/32  trust\n"
            "host  replication all   127.0.0.1/32  trust\n",
            encoding="utf-8",
        )

    def _save_state(self) -> None:
        state = {"port": self._port, "pg_bin": self.pg_bin, "data_dir": self.data_dir}
        Path(self.base_dir, STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")

    # -------------------------------------------------------------- lifecycle
    def start(self, attempts: int = 5) -> "Cluster":
        """Create the directory, run ``initdb`` and start the server.

        Retries with another port (up to *attempts* times) if the chosen port
        was taken in the meantime.  On failure everything is cleaned up
        (unless *keep*) and :class:`ClusterError` is raised.  Returns ``self``.
        """
        if self._running:
            raise ClusterError("cluster already started")
        self._prepare_dir()
        try:
            self._run_server_cmd([
                self._bin("initdb"), "-D", self.data_dir, "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
            ])
            self._write_hba()
            with open(Path(self.data_dir, "postgresql.conf"), "a", encoding="utf-8") as f:
                f.write("\ninclude 'pgcluster.conf'\n")
            for attempt in range(1, attempts + 1):
                self._port = free_port()
                self._write_config(self._port)
                proc = self._run_server_cmd([
                    self._bin("pg_ctl"), "start", "-w", "-t", "60",
                    "-D", self.data_dir, "-l", self.log_path,
                ], check=False)
                if proc.returncode == 0:
                    break
                if attempt == attempts or "already in use" not in self._log_tail():
                    raise ClusterError(
                        f"pg_ctl start failed ({proc.returncode}):\n"
                        f"{proc.stdout}{proc.stderr}{self._log_tail()}")
            self._running = True
            self._save_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, keep: Optional[bool] = None) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and delete the base dir.

        :param keep: overrides the constructor's *keep* for this call.
        Safe to call more than once and on a never-started cluster.
        """
        keep = self.keep if keep is None else keep
        if self._base is None or not self._base.exists():
            self._running = False
            return
        pid = self.pid
        if pid is not None and _pid_alive(pid):
            proc = self._run_server_cmd([
                self._bin("pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data_dir,
            ], check=False)
            if proc.returncode != 0 and _pid_alive(pid):
                self._run_server_cmd([
                    self._bin("pg_ctl"), "stop", "-w", "-t", "30", "-m", "immediate",
                    "-D", self.data_dir,
                ], check=False)
            deadline = time.monotonic() + 30
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                raise ClusterError(f"postmaster {pid} did not exit{self._log_tail()}")
        self._running = False
        if not keep:
            shutil.rmtree(self._base, ignore_errors=True)

    @classmethod
    def attach(cls, base_dir: str, *, keep: bool = False) -> "Cluster":
        """Return a :class:`Cluster` for a cluster started earlier in *base_dir*
        (e.g. by the CLI), so it can be used or stopped."""
        base = Path(base_dir).resolve()
        try:
            state = json.loads(Path(base, STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no pgcluster state in {base}: {exc}") from exc
        cluster = cls(str(base), state.get("pg_bin"), keep=keep)
        cluster._port = int(state["port"])
        cluster._running = cluster.running
        return cluster

    def __enter__(self) -> "Cluster":
        if not self._running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = str(self._base) if self._base else "<no dir>"
        return f"Cluster({where!r}, port={self._port}, running={self._running})"

    # ---------------------------------------------------------------- clients
    def psql(
        self,
        *args: str,
        dbname: str = "postgres",
        input: Optional[str] = None,
        check: bool = False,
        tcp: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``psql -X -v ON_ERROR_STOP=1 -d <dsn> *args`` and capture output.

        Example: ``pg.psql("-Atc", "select 1").stdout == "1\\n"``.  With
        *check* a non-zero exit raises :class:`subprocess.CalledProcessError`.
        """
        cmd = [self._bin("psql"), "-X", "-v", "ON_ERROR_STOP=1",
               "-d", self.dsn(dbname, tcp=tcp), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(cmd, input=input, capture_output=True, text=True,
                              check=check, env=env, timeout=COMMAND_TIMEOUT)

    def createdb(self, name: str, owner: str = SUPERUSER) -> None:
        """Create database *name* (owned by *owner*)."""
        ident = '"' + name.replace('"', '""') + '"'
        owner_ident = '"' + owner.replace('"', '""') + '"'
        proc = self.psql("-c", f"CREATE DATABASE {ident} OWNER {owner_ident}")
        if proc.returncode != 0:
            raise ClusterError(f"createdb {name!r} failed: {proc.stderr.strip()}")


# ---------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``start [--dir D]`` / ``stop --dir D [--keep]``."""
    parser = argparse.ArgumentParser(description="Throwaway PostgreSQL cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a cluster and print PG* variables")
    p_start.add_argument("--dir", help="base directory (must be missing or empty)")
    p_start.add_argument("--pg-bin", help="PostgreSQL bin directory")
    p_stop = sub.add_parser("stop", help="stop a cluster started with 'start'")
    p_stop.add_argument("--dir", required=True, help="base directory given to 'start'")
    p_stop.add_argument("--keep", action="store_true", help="keep the directory")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            cluster = Cluster(args.dir, args.pg_bin, keep=True).start()
            values = {**cluster.env(), "PGCLUSTER_DIR": cluster.base_dir,
                      "PGCLUSTER_LOG": cluster.log_path}
            for key, value in values.items():
                print(f"{key}={shlex.quote(value)}")
        else:
            Cluster.attach(args.dir).stop(keep=args.keep)
    except ClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
