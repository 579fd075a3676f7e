"""Tables of the KMS database (SQLAlchemy Core): the current schema, with the version that
introduced each table or column in ``info={"since": N}`` (absent = 1). kms/migrate.py
derives every migration from these marks; see kms/db/migrations.py."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row; bumped in every transaction that changes a key's or a store's state, so that
# every process can tell cheaply whether its cached view of key state is still current.
state_epoch = Table(
    "state_epoch",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
)

key_stores = Table(
    "key_stores",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("uri_prefix", String(128), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False),
    Column("throttle_rps", Integer, nullable=True),
    Column("created_at", String(40), nullable=False),
)

xks_credentials = Table(
    "xks_credentials",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("store", String(64), ForeignKey("key_stores.name"), nullable=False, index=True),
    # The secret, AES-256-GCM encrypted in the HSM under the credential key: iv||ct||tag.
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("created_at", String(40), nullable=False),
)

keys = Table(
    "keys",
    metadata,
    Column("key_id", String(128), primary_key=True),
    Column("store", String(64), ForeignKey("key_stores.name"), nullable=False, index=True),
    Column("usage", String(32), nullable=False),  # "ENCRYPT,DECRYPT", "ENCRYPT", ""
    Column("state", String(20), nullable=False),
    Column("primary_version", Integer, nullable=False),
    Column("min_decrypt_version", Integer, nullable=False),
    Column("deletion_due", String(40), nullable=True),
    Column("rules", Text, nullable=True),  # secondary authorization, JSON
    Column("description", String(256), nullable=True, info={"since": 2}),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

key_versions = Table(
    "key_versions",
    metadata,
    Column("key_id", String(128), ForeignKey("keys.key_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("hsm_label", String(200), nullable=False, unique=True),
    Column("imported", Boolean, nullable=False),
    Column("created_at", String(40), nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=True),
    Column("revoked", Boolean, nullable=False),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("body", LargeBinary, nullable=False),  # the canonical JSON bytes that were hashed
    Column("leaf_hash", LargeBinary, nullable=False),
)

# One row: the sequencer. Appenders lock it (PostgreSQL: SELECT ... FOR UPDATE; SQLite:
# BEGIN IMMEDIATE) so that several processes extend one log without gaps or forks.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("frontier", LargeBinary, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)
