"""Issue 9 item 2: the database goes away under XKS load, then comes back.

* PostgreSQL stopped (``pg_ctl stop -m immediate``) and started again;
* SQLite on a full disk (KMS_HOME on a small tmpfs, filled up, then freed);
* SQLite read-only: the database files and directory made immutable (``chattr +i``), then
  mutable again.

(We run as root, so ``chmod 0444`` would not stop a write: root bypasses file modes; and a
tmpfs cannot be remounted ``ro`` while the server holds files open for writing. The tests
skip where ``mount``/``chattr`` are not permitted.)

Expected each time: while it lasts every failure is 503 DependencyTimeoutException (fail
closed: no answer leaves without its durable audit record), never a 500 or a dropped
connection; afterwards the same process serves again, every acknowledged request is in the
exported log, and ``kms audit verify`` says valid with consecutive sequence numbers (no gap,
no fork).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.pg import PostgresServer
from tests.reliability.faults import FaultRun, run_across_fault
from tests.reliability.harness import export_and_verify, kinds
from tests.server import KmsServer

pytestmark = pytest.mark.slow


def check(run: FaultRun, srv: KmsServer, pid: int, export: Path, name: str) -> None:
    audit = export_and_verify(srv, export)
    acked = {a.rid for a in run.answers if a.ok}
    lost = acked - audit.ok_request_ids
    print(f"\n{run.summary(name)}; audit records verified={audit.report['record_count']}, "
          f"acknowledged={len(acked)}, lost={len(lost)}")
    failures = run.failures()
    during = run.during()
    assert during, "no request was sent during the fault"
    assert sum(not a.ok for a in during) >= 0.5 * len(during), kinds(during)
    assert {(a.status, a.error) for a in failures} == {(503, "DependencyTimeoutException")}, \
        kinds(failures)
    assert run.max_failure_ms() < 2000, "a failure took too long: fail fast, do not hang"
    assert all(a.ok for a in run.settled()), kinds(run.settled())
    assert srv.proc is not None and srv.proc.pid == pid and srv.proc.poll() is None
    assert lost == set()
    assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200


@pytest.mark.postgres
def test_postgres_stopped_under_load_fails_closed_and_resumes(tmp_path: Path) -> None:
    pg = PostgresServer()  # its own cluster: stopping the session one would hurt others
    try:
        srv = KmsServer(extra_env={"KMS_DATABASE_URL": pg.create_database()})
        srv.cli("keys", "create", "k")
        akid, secret = srv.add_credential()
        srv.start()
        assert srv.proc is not None
        pg_ctl = [str(pg.bindir / "pg_ctl"), "-D", str(pg.dir / "data")]
        seen: dict[str, object] = {}

        def readyz_during() -> None:
            import time
            time.sleep(1.0)
            r = httpx.get(srv.url + "/readyz", timeout=5)
            seen["readyz"] = (r.status_code, r.json()["database"]["status"])

        try:
            run = run_across_fault(
                srv, akid, secret, "k",
                inject=lambda: pg._run([*pg_ctl, "-m", "immediate", "stop"]),
                heal=pg.start_again, during_fault=readyz_during)
            assert seen["readyz"] == (503, "unavailable")
            check(run, srv, srv.proc.pid, tmp_path / "export", "PostgreSQL stopped")
        finally:
            srv.stop()
    finally:
        pg.stop()


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="kms-tmpfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def sqlite_server(home: Path) -> KmsServer:
    srv = KmsServer(home=home)
    srv.cli("keys", "create", "k")
    return srv


def test_sqlite_disk_full_under_load_fails_closed_and_resumes(tmp_path: Path) -> None:
    with tmpfs("48m") as mnt:
        srv = sqlite_server(mnt / "home")
        akid, secret = srv.add_credential()
        srv.start()
        assert srv.proc is not None
        filler = mnt / "filler"
        seen: dict[str, int] = {}

        def fill() -> None:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for chunk in (1 << 20, 4096, 512):
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, b"\0" * chunk)
            finally:
                os.close(fd)
            seen["free"] = os.statvfs(mnt).f_bavail

        def free() -> None:
            filler.unlink()

        try:
            run = run_across_fault(srv, akid, secret, "k", inject=fill, heal=free)
            assert seen["free"] == 0
            check(run, srv, srv.proc.pid, tmp_path / "export", "SQLite disk full")
        finally:
            srv.stop()


def test_sqlite_read_only_under_load_fails_closed_and_resumes(tmp_path: Path) -> None:
    """The database files made immutable (``chattr +i``: unlike a file mode, it stops root
    too, and it stops writes through descriptors already open); a tmpfs cannot be
    remounted read-only while the server holds its files open for writing."""
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root")
    srv = sqlite_server(Path(tempfile.mkdtemp(prefix="kms-home-")))
    akid, secret = srv.add_credential()
    srv.start()
    assert srv.proc is not None
    # Not kms.db-shm: SQLite maps it into memory, and an immutable mapped page is a SIGBUS
    # (the process dies: measured). No real read-only fault does that: a file system cannot
    # be remounted ro under open writers, and a file mode does not bind root.
    files = [srv.home / name for name in ("kms.db", "kms.db-wal")]
    files = [f for f in files if f.exists()] + [srv.home]

    def chattr(flag: str) -> None:
        done = subprocess.run(["chattr", flag, *map(str, files)], capture_output=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr is not supported here: {done.stderr.decode(errors='replace')}")

    try:
        run = run_across_fault(srv, akid, secret, "k", inject=lambda: chattr("+i"),
                               heal=lambda: chattr("-i"))
        check(run, srv, srv.proc.pid, tmp_path / "export", "SQLite read-only")
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True, check=False)
        srv.stop()
