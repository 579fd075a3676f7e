"""An in-process Runtime on a fresh KMS_HOME (own SoftHSM token, SQLite), for the
in-process parts of the benchmark."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kms.bootstrap import run_init
from kms.runtime import Runtime
from kms.settings import Settings


@contextmanager
def local_runtime(audit_writer: str = "thread") -> Iterator[tuple[Runtime, dict[str, str]]]:
    """``audit_writer="process"``: audit records committed by the writer process once a
    loop calls ``rt.audit.attach_loop()``, as in ``kms serve``."""
    home = Path(tempfile.mkdtemp(prefix="kms-bench-local-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("SOFTHSM2_CONF", "KMS_PKCS11_PIN", "KMS_DATABASE_URL")}
    env["KMS_HOME"] = str(home)
    settings = Settings.from_env(env)
    run_init(settings)
    rt = Runtime.open(settings, audit_writer=audit_writer)
    try:
        yield rt, env
    finally:
        rt.close()
        shutil.rmtree(home, ignore_errors=True)
