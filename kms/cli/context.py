"""Opening the runtime for one CLI command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kms.runtime import Runtime


@contextmanager
def runtime() -> Iterator[Runtime]:
    # Imported here, not to build `kms`'s parser: `kms serve` starts sooner.
    from kms.runtime import Runtime
    from kms.settings import Settings

    rt = Runtime.open(Settings.from_env())
    try:
        yield rt
    finally:
        rt.close()
