"""The verifier checks every record against schema 1 (docs/audit.md), whichever of its
paths reads the line: a record that breaks the schema is ``malformed`` even when it is
canonical, correctly chained and covered by a signed checkpoint (a log written by a
compromised or buggy service, or edited in its database before a checkpoint signed it).

Found by coverage-guided fuzzing (tests/reliability/atheris_targets.py ``record-line``):
the regex fast path and the JSON path used to check only the fields the chain needs
(keys, seq, prev, op, outcome, time's shape) and let the others through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from kms.audit.record import ChainHead, record_hash
from kms.audit.verify import verify_export
from tests.audit.synthetic import Signer, build_export, make_records, notes_for

BAD_AT = 3


def _line(obj: dict[str, Any]) -> bytes:
    return bytes(rfc8785.dumps(obj))


def _export_with(tmp_path: Path, change: dict[str, Any]) -> Any:
    head = list(make_records(BAD_AT))
    template = json.loads(head[-1])
    bad = {**template, **change, "seq": BAD_AT, "prev": record_hash(head[-1])}
    line = _line(bad)
    tail = list(make_records(2, start=BAD_AT + 1,
                             head=ChainHead(seq=BAD_AT, record_hash=record_hash(line))))
    records = [*head, line, *tail]
    signer = Signer.generate()
    out = build_export(tmp_path / "export", records, notes_for(records, signer, 6), signer)
    return verify_export(out, signer.pem)


CHANGES = {
    # lines the regex fast path reads (ASCII, empty detail, short)
    "unknown actor kind": {"actor": {"id": "x", "kind": "root"}, "detail": {}},
    "empty actor id": {"actor": {"id": "", "kind": "cli"}, "detail": {}},
    "key version 0": {"key_version": 0, "detail": {}},
    "empty store": {"store": "", "detail": {}},
    "empty key id": {"key_id": "", "detail": {}},
    "an ok outcome with an error": {"outcome": "ok", "error": "ValidationException",
                                    "detail": {}},
    "an error name that is not one": {"outcome": "error", "error": "not a name!",
                                      "detail": {}},
    "no such day": {"time": "2025-02-30T00:00:00.000000Z", "detail": {}},
    "no such hour": {"time": "2025-02-03T24:00:00.000000Z", "detail": {}},
    "empty request field": {"request": {"awsPrincipalArn": None, "awsSourceVpce": None,
                                        "kmsKeyArn": None, "kmsOperation": "",
                                        "kmsRequestId": None, "kmsViaService": None},
                            "detail": {}},
    "key id over 2048 characters": {"key_id": "k" * 3000, "detail": {}},
    # lines the JSON path reads (a detail, a number where a string belongs)
    "actor id a number": {"actor": {"id": 5, "kind": "cli"}},
    "actor not an object": {"actor": "cli"},
    "detail key not snake_case": {"detail": {"Bad Key": 1}},
    "detail value a list": {"detail": {"reason": [1, 2]}},
    "request with a stray field": {"request": {"kmsRequestId": "r", "extra": "x"}},
    "latency negative": {"latency_us": -1, "detail": {"reason": "x"}},
}


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_signed_record_that_breaks_the_schema_is_malformed(tmp_path: Path,
                                                             what: str) -> None:
    report = _export_with(tmp_path, CHANGES[what])
    assert report.status == "invalid", what
    assert report.first_fault is not None
    assert (report.first_fault.kind.value, report.first_fault.seq) == ("malformed", BAD_AT)


def test_the_same_export_without_a_change_verifies(tmp_path: Path) -> None:
    """The harness itself: a record rebuilt from its neighbour's fields is valid."""
    report = _export_with(tmp_path, {})
    assert report.status == "valid", report.faults
