"""The HSM worker process of ``kms serve``: the XKS encrypt and decrypt calls leave the
event loop for a process with its own PKCS#11 session (docs/architecture.md)."""
