"""Shared fixtures: a real SoftHSM2 token directory for the whole test session.

python-pkcs11 loads the module once per process and SoftHSM reads ``SOFTHSM2_CONF`` when it
is initialized, so every in-process test shares one token directory (a temp dir); each
test that needs isolation makes its own token in it with :func:`make_token`.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.pg import PostgresServer

import pytest

ROOT = Path(__file__).resolve().parent.parent
CREATE_TOKEN = ROOT / "softhsm-setup" / "create-token.sh"
TEST_PIN = "test-user-pin-7731"
TEST_SO_PIN = "test-so-pin-4410"


def create_token(directory: Path, label: str) -> Path:
    """Create (idempotently) token ``label`` in ``directory``; returns the config path."""
    env = dict(os.environ, SOFTHSM_PIN=TEST_PIN, SOFTHSM_SO_PIN=TEST_SO_PIN)
    env.pop("SOFTHSM2_CONF", None)
    out = subprocess.run(
        [str(CREATE_TOKEN), str(directory), label],
        env=env, check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


@pytest.fixture(scope="session")
def softhsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("softhsm")
    conf = create_token(directory, "session")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield directory
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture()
def make_token(softhsm_dir: Path) -> Callable[[], str]:
    """Make a fresh token in the session's token directory; returns its label."""

    def make() -> str:
        label = "t-" + uuid.uuid4().hex[:12]
        create_token(softhsm_dir, label)
        return label

    return make


@pytest.fixture(scope="session")
def softhsm_module() -> str:
    from hsm.pkcs11_hsm import find_softhsm_module

    path = find_softhsm_module()
    if path is None:
        pytest.fail("SoftHSM2 is not installed: run `make install`")
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    from tests.pg import PostgresServer

    server = PostgresServer()
    yield server
    server.stop()
