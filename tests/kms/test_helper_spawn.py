"""kms serve's helper processes (the audit writer, the HSM worker) do not import from the
working directory: a module planted there could read what they are sent (the PIN)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kms import helper_channel


def test_a_helper_does_not_import_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_helper.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    spawned = helper_channel._spawn("planted_helper", helper_channel.SECRET_ENV)
    assert spawned is not None
    sock, proc = spawned
    try:
        assert proc.wait(timeout=30) != 0  # no such module on its path
    finally:
        sock.close()
    assert not marker.exists()
