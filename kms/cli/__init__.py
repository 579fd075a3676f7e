"""The ``kms`` command line (design §5)."""
