"""Schema migrations: a database made by schema version 1 upgrades to the latest with its
data intact, on SQLite and PostgreSQL; version steps are derived from the schema marks."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from kms import migrate as m
from kms.audit.event import cli_actor
from kms.db import migrations, schema
from kms.db.engine import make_engine
from kms.keys.model import KeyUsage
from kms.keys.registry import Registry
from tests.kms.conftest import RuntimeFactory


def test_version_one_database_upgrades_with_its_data(db_url: str,
                                                     make_runtime: RuntimeFactory) -> None:
    engine = make_engine(db_url)
    assert migrations.migrate(engine, target=1) == 1
    assert "description" not in {c["name"] for c in inspect(engine).get_columns("keys")}
    registry = Registry(engine)
    with engine.begin() as conn:  # a v1-era row, written with v1's columns only
        conn.execute(text("INSERT INTO key_stores (name, uri_prefix, enabled, created_at) "
                          "VALUES ('default', 'xks', true, '2026-01-01T00:00:00.000000Z')"))
        conn.execute(text(
            "INSERT INTO keys (key_id, store, usage, state, primary_version, "
            "min_decrypt_version, created_at, updated_at) VALUES ('old', 'default', "
            "'ENCRYPT', 'DISABLED', 1, 1, '2026-01-01T00:00:00.000000Z', "
            "'2026-01-01T00:00:00.000000Z')"))
        conn.execute(text("INSERT INTO key_versions (key_id, version, hsm_label, imported, "
                          "created_at) VALUES ('old', 1, 'legacy-label', false, "
                          "'2026-01-01T00:00:00.000000Z')"))
    with pytest.raises(Exception):  # noqa: B017 - the v2 column does not exist yet
        registry.get_key("old")
    assert migrations.migrate(engine) == migrations.LATEST == 2
    assert migrations.migrate(engine) == 2  # idempotent
    old = registry.get_key("old")
    assert (old.state.value, old.usage, old.description) == (
        "DISABLED", frozenset({KeyUsage.ENCRYPT}), None)
    assert registry.epoch() == 0  # the v1 seed row survived
    engine.dispose()
    # the upgraded database serves: a new key with a description
    rt = make_runtime(db_url)
    key = rt.keys.create_key("new", frozenset({KeyUsage.ENCRYPT}), cli_actor(),
                             description="payments ledger")
    assert key.description == "payments ledger"


def test_every_table_and_column_is_covered_by_a_version() -> None:
    latest = m.latest_version(schema.metadata)
    for table in schema.metadata.tables.values():
        assert 1 <= m.since(table) <= latest
        for column in table.columns:
            assert m.since(table) <= m.since(column) <= latest, (table.name, column.name)
            if m.since(column) > m.since(table):
                assert column.nullable, f"{table.name}.{column.name} added later must be nullable"


def test_a_newer_database_is_refused(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrations.migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(RuntimeError, match="newer than this software"):
        migrations.migrate(engine)
