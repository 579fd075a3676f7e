"""Opening the runtime for one CLI command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kms.runtime import Runtime
from kms.settings import Settings


@contextmanager
def runtime() -> Iterator[Runtime]:
    rt = Runtime.open(Settings.from_env())
    try:
        yield rt
    finally:
        rt.close()
