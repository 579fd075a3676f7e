"""Versioned schema migrations for SQLAlchemy Core metadata (a library: no KMS logic, so the
gateway uses it for its own database too).

The schema module stays the one description of the current schema. Every table and column
carries the version that introduced it in ``info={"since": N}`` (absent = 1). Version 1
creates every table and column of version 1; version N > 1 creates the tables introduced in
N and adds the columns introduced in N to older tables (``ALTER TABLE ... ADD COLUMN``;
such columns must be nullable or have a server default). A change that is not additive
(rename, drop, type change) needs an explicit step in ``extra_steps``.

Each version is applied in its own transaction together with the version row, so a crash
leaves the database at one version or the next, never between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    inspect,
    select,
    text,
)

Step = Callable[[Connection], None]
VERSION_TABLE = "schema_version"


def since(item: Table | Column[object]) -> int:
    return int(item.info.get("since", 1))


def latest_version(metadata: MetaData) -> int:
    versions = [since(t) for t in metadata.tables.values()]
    versions += [since(c) for t in metadata.tables.values() for c in t.columns]
    return max(versions, default=1)


def _metadata_at(metadata: MetaData, version: int) -> MetaData:
    """The schema as it was at ``version`` (tables and columns introduced up to it)."""
    out = MetaData()
    for table in metadata.sorted_tables:
        if since(table) > version:
            continue
        cols = [c._copy() for c in table.columns if since(c) <= version]
        # Column copies lose their ForeignKey objects: add them back by target name.
        for col in cols:
            for fk in table.c[col.name].foreign_keys:
                col.append_foreign_key(ForeignKey(fk.target_fullname))
        Table(table.name, out, *cols, *[c._copy() for c in table.constraints
                                         if _constraint_fits(c, version)])
    return out


def _constraint_fits(constraint: object, version: int) -> bool:
    from sqlalchemy import ForeignKeyConstraint, PrimaryKeyConstraint, UniqueConstraint

    # Primary keys, foreign keys and unique constraints travel with the copied columns.
    carried = PrimaryKeyConstraint | ForeignKeyConstraint | UniqueConstraint
    return not isinstance(constraint, carried)


def _version_table() -> Table:
    return Table(VERSION_TABLE, MetaData(), Column("id", Integer, primary_key=True),
                 Column("version", Integer, nullable=False))


def current_version(engine: Engine) -> int:
    if not inspect(engine).has_table(VERSION_TABLE):
        return 0
    table = _version_table()
    with engine.connect() as conn:
        row = conn.execute(select(table.c.version)).first()
    return int(row[0]) if row else 0


def _apply(conn: Connection, metadata: MetaData, version: int) -> None:
    if version == 1:
        _metadata_at(metadata, 1).create_all(conn)
        return
    at = _metadata_at(metadata, version)
    for table in metadata.sorted_tables:
        if since(table) == version:
            at.tables[table.name].create(conn)
        elif since(table) < version:
            for column in table.columns:
                if since(column) == version:
                    ddl_type = column.type.compile(dialect=conn.dialect)
                    conn.execute(text(
                        f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {ddl_type}'))


def migrate(engine: Engine, metadata: MetaData, *, target: int | None = None,
            after_version: Mapping[int, Step] | None = None) -> int:
    """Bring the database to ``target`` (default: the latest); returns the version reached.

    ``after_version[N]`` runs in version N's transaction, after its DDL (seed rows, data
    moves)."""
    goal = latest_version(metadata) if target is None else target
    version_table = _version_table()
    with engine.begin() as conn:
        version_table.create(conn, checkfirst=True)
    version = current_version(engine)
    if version > latest_version(metadata):
        raise RuntimeError(f"the database is at schema version {version}, newer than this "
                           f"software ({latest_version(metadata)}): upgrade the software")
    for step in range(version + 1, goal + 1):
        with engine.begin() as conn:
            _apply(conn, metadata, step)
            if after_version and step in after_version:
                after_version[step](conn)
            conn.execute(version_table.delete())
            conn.execute(version_table.insert().values(id=1, version=step))
    return max(version, goal)
