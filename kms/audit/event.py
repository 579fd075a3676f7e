"""What a service hands to the audit log: a record without its position in the log.

The log (kms/audit/log.py) gives each event its sequence number, time and chain hash.
Services depend only on :class:`AuditSink`, so tests can pass a list-backed sink.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hsm.frozen import quick_init
from kms.audit.record import Actor, ActorKind, DetailValue, Operation, Outcome, RequestMetadata


@quick_init
@dataclass(frozen=True, slots=True)
class AuditEvent:
    op: Operation
    outcome: Outcome
    actor: Actor
    key_id: str | None = None
    key_version: int | None = None
    store: str | None = None
    error: str | None = None
    request: RequestMetadata | None = None
    context_hash: str | None = None
    latency_us: int | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)


class AuditSink(Protocol):
    def append(self, event: AuditEvent) -> int:
        """Make the event durable; returns its sequence number. Raises if it cannot."""
        ...


class ListSink:
    """An in-memory sink for unit tests of the layers above the log."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    def append(self, event: AuditEvent) -> int:
        if self.fail:
            from kms.errors import DependencyTimeoutError

            raise DependencyTimeoutError("the audit log is unavailable")
        self.events.append(event)
        return len(self.events) - 1

    async def append_async(self, event: AuditEvent) -> int:
        """What the XKS front door awaits of the log (``AuditLog.append_async``)."""
        return self.append(event)


def context_hash(data: bytes | None) -> str | None:
    """The only form in which AAD or an encryption context reaches the log."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def cli_actor(name: str = "cli") -> Actor:
    return Actor(kind=ActorKind.CLI, id=name)


SYSTEM_ACTOR = Actor(kind=ActorKind.SYSTEM, id="kms")
