"""The admin API (``/admin/v1``): key, store, credential and token lifecycle and the audit
export over HTTP, with bearer tokens and roles. Routes call the same service layer as the
``kms`` CLI."""
