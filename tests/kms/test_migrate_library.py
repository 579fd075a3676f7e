"""kms.migrate (used by both services): additive versions derived from ``since`` marks."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, inspect, text

from kms import migrate as m
from kms.db.engine import make_engine


def schema() -> MetaData:
    md = MetaData()
    Table("tenant", md, Column("id", String(16), primary_key=True),
          Column("name", String(64), nullable=False),
          Column("note", String(64), nullable=True, info={"since": 2}))
    Table("item", md, Column("id", Integer, primary_key=True),
          Column("tenant", String(16), ForeignKey("tenant.id"), nullable=False),
          info={"since": 3})
    return md


def test_upgrade_from_each_version_keeps_data(db_url: str) -> None:
    md = schema()
    assert m.latest_version(md) == 3
    engine = make_engine(db_url)
    assert m.migrate(engine, md, target=1) == 1
    insp = inspect(engine)
    assert {c["name"] for c in insp.get_columns("tenant")} == {"id", "name"}
    assert not insp.has_table("item")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenant (id, name) VALUES ('a', 'Acme')"))
    assert m.migrate(engine, md, target=2) == 2
    assert m.migrate(engine, md) == 3
    insp = inspect(engine)
    assert {c["name"] for c in insp.get_columns("tenant")} == {"id", "name", "note"}
    assert [fk["referred_table"] for fk in insp.get_foreign_keys("item")] == ["tenant"]
    with engine.begin() as conn:
        assert conn.execute(text("SELECT name, note FROM tenant")).one() == ("Acme", None)
        conn.execute(text("INSERT INTO item (id, tenant) VALUES (1, 'a')"))
    assert m.current_version(engine) == 3
    engine.dispose()


def test_gateway_schema_is_versioned(sqlite_url: str) -> None:
    from gateway import db

    engine = db.make_engine(sqlite_url)
    assert db.create_schema(engine) == m.latest_version(db.metadata)
    assert db.create_schema(engine) == m.latest_version(db.metadata)  # idempotent
    assert inspect(engine).has_table("request_logs")
