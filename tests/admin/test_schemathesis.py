"""schemathesis against the live server's /openapi.json (admin routes): no 500 and no
response that breaks the published schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.admin.conftest import Live

#: test cases per operation and phase. Without --max-time, which makes the fuzzing and
#: stateful phases repeat until the time is spent (60 s before): each phase runs once,
#: about 30 s on the shared 2-core machine
MAX_EXAMPLES = 30
#: a hard stop for the run
RUN_TIMEOUT_S = 180


def test_admin_api_conforms_to_its_openapi(live: Live, tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is not installed: run `make install` (dev extras)")
    cmd = [
        st, "run", f"{live.base_url}/openapi.json",
        "--include-path-regex", "^/admin/",
        # It would revoke its own token, and every later call would be a (correct) 401.
        "--exclude-path", "/admin/v1/tokens/{name}/revoke",
        "--checks", "not_a_server_error,response_schema_conformance,"
                    "status_code_conformance,content_type_conformance",
        "--header", f"Authorization: Bearer {live.tokens['admin']}",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "6",
        "--workers", "1",
        "--request-timeout", "20",
        "--no-color",
        "--report-dir", str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                         cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert "500" not in {line.split()[0] for line in live.logs.text().splitlines()
                         if line.startswith("5")}
