"""`kms` builds its parser without the service's heavy imports, so that `kms serve` can start
the audit writer process before them (kms/cli/serve_cmd.py; a restart serves sooner)."""

from __future__ import annotations

import subprocess
import sys

from kms.cli.tokens_cmd import ROLES
from kms.tokens import Role

HEAVY = ("sqlalchemy", "fastapi", "pydantic", "uvicorn", "kms.runtime", "kms.app",
         "kms.audit.writer_process")


def test_building_the_parser_imports_none_of_the_service() -> None:
    code = ("import sys; from kms.cli.main import build_parser; build_parser(); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == []


def test_the_tokens_role_choices_are_the_roles() -> None:
    assert tuple(r.value for r in Role) == ROLES
