"""``python -m tests.audit.xks_event_probe``: two signed XKS encrypts through kms serve's
app in-process (one answered, one for a key that does not exist), on a fresh KMS_HOME with
its own SoftHSM token. Its last line is JSON: for each audit event the front door awaited,
the HTTP status, the event's outcome and key id, and how ``kms.audit.writer_process``
would send it to the writer process ("v": plain values, "o": the object). A process of its
own because SoftHSM reads its token directory once per process
(tests/audit/test_writer_process.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from kms.app import KmsApp, create_app
from kms.audit import writer_process
from kms.audit.event import AuditEvent, cli_actor
from kms.bench.local_runtime import local_runtime
from kms.bench.micro import USAGE, _Receive, _xks_credential
from kms.bench.wrk import Prepared
from kms.bench.xks_load import encrypt_body, presign


class _Recorder:
    """What the front door awaits of the audit log, keeping the events."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append_async(self, event: AuditEvent) -> int:
        self.events.append(event)
        return len(self.events)


async def _call(app: KmsApp, p: Prepared) -> int:
    status: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    headers = [(b"host", b"127.0.0.1:8000")] + [
        (k.lower().encode(), v.encode()) for k, v in p.headers.items()]
    scope = {"type": "http", "method": "POST", "path": p.path, "raw_path": p.path.encode(),
             "query_string": b"", "headers": headers, "client": ("10.0.0.1", 40000)}
    await app(scope, _Receive(p.body).receive, send)
    return status[0]


def main() -> None:
    with local_runtime() as (rt, _):
        rt.keys.create_key("micro", USAGE, cli_actor("test"))
        url, akid, secret = _xks_credential(rt)
        (ok,) = presign(url, akid, secret, [encrypt_body(b"a" * 32, "micro")])
        (absent,) = presign(url.replace("/micro/", "/absent/"), akid, secret,
                            [encrypt_body(b"a" * 32, "absent")])
        app = create_app(rt, background=False)
        assert isinstance(app, KmsApp) and app.xks is not None
        recorder = _Recorder()
        app.xks.audit = recorder  # type: ignore[assignment]  # what the front door awaits
        statuses = [asyncio.run(_call(app, p)) for p in (ok, absent)]
        print(json.dumps([[status, e.outcome.value, e.key_id, writer_process._fields(e)[0]]
                          for status, e in zip(statuses, recorder.events, strict=True)]))


if __name__ == "__main__":
    main()
