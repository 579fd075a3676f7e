"""Fixtures for the KMS: a Runtime on a real SoftHSM token and a real database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hsm import Pin
from hsm.pkcs11_hsm import Pkcs11Hsm
from kms.bootstrap import ensure_database, ensure_service_keys
from kms.db.engine import make_engine
from kms.runtime import Runtime
from kms.settings import Settings
from tests.conftest import TEST_PIN
from tests.pg import PostgresServer


class FakeClock:
    """A settable clock for exact lifecycle tests."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def runtime_env(home: Path, url: str, token_label: str) -> dict[str, str]:
    return {
        "KMS_HOME": str(home),
        "KMS_DATABASE_URL": url,
        "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"],
        "KMS_PKCS11_PIN": TEST_PIN,
        "KMS_PKCS11_TOKEN_LABEL": token_label,
        "KMS_CHECKPOINT_INTERVAL": "3600",
    }


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kms.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kms.db'}"


@pytest.fixture()
def make_runtime(make_token: Callable[[], str], softhsm_module: str,
                 tmp_path: Path) -> Iterator[RuntimeFactory]:
    opened: list[Runtime] = []

    def make(url: str, *, clock: Callable[[], datetime] | None = None,
             token_label: str | None = None, short_deletion: bool = False,
             uri_prefix: str | None = None) -> Runtime:
        label = token_label or make_token()
        env = runtime_env(tmp_path, url, label)
        if short_deletion:
            env["KMS_DEV_ALLOW_SHORT_DELETION"] = "1"
        settings = Settings.from_env(env)
        hsm = Pkcs11Hsm(softhsm_module, label, Pin(TEST_PIN))
        ensure_service_keys(hsm)
        engine = make_engine(url)
        ensure_database(engine, uri_prefix)
        engine.dispose()
        kwargs = {"clock": clock} if clock else {}
        rt = Runtime.open(settings, hsm=hsm, **kwargs)
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()
