"""A holder for key material that does not print and does not pickle.

Python cannot promise to wipe memory, so the point of this type is narrower: key material
must not leave the process by accident, through a log line, an exception report, a repr
in a debugger dump, or a pickle sent to another process or written to disk.
"""

from __future__ import annotations

from typing import NoReturn


class SecretBytes:
    """Key material. ``repr``/``str`` are redacted; pickling and copying raise ``TypeError``."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("SecretBytes holds bytes")
        self._value = value

    def reveal(self) -> bytes:
        """The raw bytes; call only at the point where a cipher needs them."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"SecretBytes(<redacted {len(self._value)} bytes>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Identity only: comparing key material by value invites timing leaks.
        return self is other

    __hash__ = object.__hash__

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")
