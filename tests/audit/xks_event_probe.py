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

from kms.app import KmsApp, create_app
from kms.audit import writer_process
from kms.audit.event import ListSink, cli_actor
from kms.bench.local_runtime import local_runtime
from kms.bench.micro import USAGE, asgi_call, edge_request, xks_credential
from kms.bench.xks_load import encrypt_body, presign


def main() -> None:
    with local_runtime() as (rt, _):
        rt.keys.create_key("micro", USAGE, cli_actor("test"))
        calls = []
        for key in ("micro", "absent"):
            url, akid, secret = xks_credential(rt, key)
            calls += [asgi_call(p) for p in presign(url, akid, secret,
                                                    [encrypt_body(b"a" * 32, key)])]
        app = create_app(rt, background=False)
        assert isinstance(app, KmsApp) and app.xks is not None
        sink = ListSink()
        app.xks.audit = sink  # type: ignore[assignment]  # what the front door awaits
        statuses = [asyncio.run(edge_request(app, c, expect=None)) for c in calls]
        print(json.dumps([[status, e.outcome.value, e.key_id, writer_process._fields(e)[0]]
                          for status, e in zip(statuses, sink.events, strict=True)]))


if __name__ == "__main__":
    main()
