"""A throwaway PostgreSQL server for the tests, started as the ``postgres`` user.

``initdb`` and ``postgres`` refuse to run as root (shared/facts.md), so the cluster lives in
a temp dir owned by ``postgres`` and listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        bindir = _bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run `make install`")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="kms-pg-"))
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([str(bindir / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                   "-U", "kms", "-E", "UTF8", "--no-sync"])
        self._run([str(bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                   str(self.dir / "log"), "-w", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c max_connections=200", "start"])

    def _run(self, cmd: list[str]) -> None:
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd="/tmp")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://kms@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"postgresql://kms@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                       "immediate", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)

    def start_again(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                   str(self.dir / "log"), "-w", "-o",
                   f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off", "start"])

    def wait(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
