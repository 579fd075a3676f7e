"""The user PIN as a type that never prints itself."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from hsm.errors import HsmConfigError


class Pin:
    """A PKCS#11 user PIN. ``repr`` and ``str`` are redacted and it refuses pickling."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise HsmConfigError("the PKCS#11 PIN is empty")
        self._value = value

    def reveal(self) -> str:
        """The PIN itself, for the one call that logs in."""
        return self._value

    def __repr__(self) -> str:
        return "Pin(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Pin cannot be pickled")


def load_pin(env: Mapping[str, str] | None = None) -> Pin:
    """Read the PIN from ``KMS_PKCS11_PIN`` or from the file named by ``KMS_PKCS11_PIN_FILE``."""
    env = os.environ if env is None else env
    value = env.get("KMS_PKCS11_PIN")
    if value:
        return Pin(value)
    path = env.get("KMS_PKCS11_PIN_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise HsmConfigError(f"cannot read the PIN file {path}: {exc.strerror}") from None
        return Pin(text.strip())
    raise HsmConfigError("no PKCS#11 PIN: set KMS_PKCS11_PIN or KMS_PKCS11_PIN_FILE")
