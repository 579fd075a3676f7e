"""hsm.frozen.quick_init builds the same objects as the dataclass's own __init__, as
frozen, and refuses the classes it could not rebuild exactly."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import InitVar, dataclass, field
from typing import Any

import pytest

from hsm.calls import GcmDecrypt, GcmEncrypt
from hsm.frozen import quick_init
from hsm.types import GcmCiphertext
from kms.audit import record
from kms.audit.event import AuditEvent
from kms.envelope.keyring import WrappedKey
from kms.keys.service import Encrypted
from kms.xks import handler, sigv4, wire


def _pair() -> tuple[type[Any], type[Any]]:
    """The same class twice: with the dataclass's __init__, and with quick_init's."""
    classes = []
    for quick in (False, True):
        @dataclass(frozen=True, slots=True)
        class Value:
            a: int
            b: str = "b"
            c: list[int] = field(default_factory=list)
            d: int = field(default=4, kw_only=True)

            def __post_init__(self) -> None:
                if self.a < 0:
                    raise ValueError("a must not be negative")

        classes.append(quick_init(Value) if quick else Value)
    return classes[0], classes[1]


@pytest.mark.parametrize("args, kwargs", [
    ((1,), {}), ((1, "x"), {}), ((1, "x", [3]), {"d": 5}), ((), {"a": 2, "c": [1], "d": 0}),
])
def test_same_objects_as_the_dataclass_init(args: tuple[Any, ...],
                                            kwargs: dict[str, Any]) -> None:
    plain, quick = _pair()
    p, q = plain(*args, **kwargs), quick(*args, **kwargs)
    assert dataclasses.asdict(p) == dataclasses.asdict(q)
    assert repr(p).split("(", 1)[1] == repr(q).split("(", 1)[1]


def test_frozen_post_init_and_fresh_factory_values() -> None:
    _, quick = _pair()
    v = quick(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.a = 2
    with pytest.raises(ValueError, match="negative"):
        quick(-1)
    assert quick(1).c is not quick(1).c
    assert quick(1, "x", d=2) == quick(1, "x", d=2) != quick(1, "x", d=3)


def test_same_argument_errors_as_the_dataclass_init() -> None:
    plain, quick = _pair()
    for args, kwargs in (((), {}), ((1, "x", [], 4), {}), ((1,), {"e": 1})):
        with pytest.raises(TypeError):
            plain(*args, **kwargs)
        with pytest.raises(TypeError):
            quick(*args, **kwargs)


def test_refuses_classes_it_cannot_rebuild() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int] = 0

    @dataclass(frozen=True, slots=True)
    class NotInit:
        a: int
        b: int = field(default=0, init=False)

    for cls in (NoSlots, NotFrozen, WithInitVar, NotInit):
        with pytest.raises(TypeError):
            quick_init(cls)


@pytest.mark.parametrize("cls", [
    GcmEncrypt, GcmDecrypt, GcmCiphertext, Encrypted, WrappedKey, AuditEvent, record.Actor,
    record.RequestMetadata, handler.XksRequest, handler.XksResponse, handler.HsmStep,
    sigv4.VerifiedCaller, wire.RequestMetadata, wire.EncryptRequest, wire.DecryptRequest,
])
def test_the_request_path_classes_keep_their_fields_as_parameters(cls: type[Any]) -> None:
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert (p.kind is inspect.Parameter.KEYWORD_ONLY) == f.kw_only
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty
