"""Property: on random small logs, every single tampering is caught and located."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms.audit.export_format import record_file_name, write_export
from kms.audit.verify import FaultKind, verify_export

from .synthetic import KEY_NAME, ORIGIN, Signer, make_records, notes_for

SIGNER = Signer.generate()
RECORDS = list(make_records(80))


def _export(n: int, every: int, lines: list[bytes]) -> Path:
    out = Path(tempfile.mkdtemp()) / "export"
    write_export(out, RECORDS[:n], notes_for(RECORDS[:n], SIGNER, every), SIGNER.pem,
                 ORIGIN, KEY_NAME)
    if lines != RECORDS[:n]:
        (out / record_file_name(0)).write_bytes(b"".join(line + b"\n" for line in lines))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 80),
    every=st.integers(1, 20),
    action=st.sampled_from(["delete", "duplicate", "swap", "modify"]),
    data=st.data(),
)
def test_single_tampering_is_located(n: int, every: int, action: str,
                                     data: st.DataObject) -> None:
    lines = RECORDS[:n]
    # Keep the tampered record before the last one, so a successor exists to expose it.
    k = data.draw(st.integers(0, n - 2))
    if action == "delete":
        tampered, kind = lines[:k] + lines[k + 1 :], FaultKind.MISSING_RECORD
    elif action == "duplicate":
        tampered, kind = [*lines[: k + 1], lines[k], *lines[k + 1 :]], FaultKind.DUPLICATE_RECORD
    elif action == "swap":
        tampered = list(lines)
        tampered[k], tampered[k + 1] = tampered[k + 1], tampered[k]
        kind = FaultKind.OUT_OF_ORDER
    else:
        tampered = list(lines)
        tampered[k] = tampered[k].replace(b'"latency_us":', b'"latency_us":1')
        kind = FaultKind.CHAIN_BROKEN
    out = _export(n, every, tampered)
    try:
        report = verify_export(out, SIGNER.pem)
    finally:
        shutil.rmtree(out.parent)
    assert report.status == "invalid"
    assert report.first_fault is not None
    assert (report.first_fault.kind, report.first_fault.seq) == (kind, k)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 80), every=st.integers(1, 30))
def test_untouched_small_logs(n: int, every: int) -> None:
    out = _export(n, every, RECORDS[:n])
    try:
        report = verify_export(out, SIGNER.pem)
    finally:
        shutil.rmtree(out.parent)
    covered = n - n % every
    expected = "valid" if covered == n and n > 0 else "incomplete"
    assert report.status == expected, report
    assert report.uncovered_records == n - covered
