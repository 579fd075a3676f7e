"""Tamper-evident audit log (design §4; auditor guide: docs/audit.md).

Pure core: ``record`` (schema-1 records, RFC 8785), ``merkle`` (RFC 6962/9162 tree and
proofs), ``checkpoint`` (C2SP signed checkpoints, ECDSA P-256), ``export_format`` (export
layout and writer), ``verify`` (offline verifier and inclusion proofs), ``errors``.
"""
