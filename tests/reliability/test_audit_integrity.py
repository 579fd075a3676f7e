"""The audit log's start-up integrity check under concurrent writers (found by the replica
crash test: a CLI starting while two replicas appended failed with "the audit log head does
not match its records", because it compared the head with the *latest* record, read in a
separate transaction). It must pass a sound log that grows meanwhile, and still fail closed
on a real mismatch."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import delete, update

from kms.audit.event import AuditEvent, cli_actor
from kms.audit.log import AuditLog, init_head
from kms.audit.record import Operation, Outcome
from kms.clock import system_clock
from kms.db import schema as t
from kms.db.engine import make_engine
from kms.db.migrations import migrate
from kms.errors import DependencyTimeoutError


def make_log(tmp_path: Path) -> AuditLog:
    engine = make_engine(f"sqlite:///{tmp_path / 'kms.db'}")
    migrate(engine)
    with engine.begin() as conn:
        init_head(conn)
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return AuditLog(engine, system_clock, origin="test/audit", key_name="test/audit",
                    public_key_pem=pem, sign=lambda _m: b"")


def event() -> AuditEvent:
    return AuditEvent(op=Operation.AUDIT_EXPORT, outcome=Outcome.OK, actor=cli_actor())


def test_integrity_check_passes_while_another_writer_appends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path)
    for _ in range(5):
        log.append(event())
    stale = log.head()
    for _ in range(3):  # another process commits after our head read
        log.append(event())
    monkeypatch.setattr(log, "head", lambda: stale)
    log.check_integrity()
    log.close()


def test_integrity_check_fails_closed_on_a_real_mismatch(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for _ in range(4):
        log.append(event())
    engine = log._engine
    with engine.begin() as conn:  # the head names a record that is not there
        conn.execute(delete(t.audit_records).where(t.audit_records.c.seq == 3))
    with pytest.raises(DependencyTimeoutError):
        log.check_integrity()
    with engine.begin() as conn:  # the head's hash is not the record's
        conn.execute(update(t.audit_head).values(size=3, last_hash="ab" * 32))
    with pytest.raises(DependencyTimeoutError):
        log.check_integrity()
    log.close()
