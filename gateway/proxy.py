"""The proxy's request flow: one method per endpoint, called by :mod:`gateway.routes`.

``POST /v1/chat/completions``, in order:

1. authenticate the virtual key (401), check the model is allowed (403), count the request
   against the key's limits (429 with ``x-ratelimit-*`` and ``retry-after``);
2. redact PII as the tenant's mode says (:mod:`gateway.pii`), and encrypt the prompt under
   the tenant's key (unless the client sent ``x-gateway-no-store``); get the tenant's
   decrypted provider keys. Both come from memory when possible (a data key and provider
   keys cached for at most the published bound), else in a worker thread that calls the
   tenant's key service: a revoked key fails here with 403, an unreachable one with 503;
3. forward with the tenant's key, failing over to its next key on 429/5xx;
4. plain: return the answer; streaming: pass the SSE bytes through as they come and cancel
   the upstream call when the client goes away;
5. charge the tokens the upstream reported, seal the response and metadata, and hand the
   one row of the request to the group-commit writer (:class:`gateway.request_logs.RequestLog`).

In the steady state (keys, tenants and data keys cached) a request makes no database call
and no thread hop before it is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import pii
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotAllowedError,
    UpstreamError,
)
from gateway.http_client import HttpError
from gateway.http_client import Response as UpstreamResponse
from gateway.provider_keys import ProviderCredential, ProviderKeyVault
from gateway.rate_limits import RateLimits
from gateway.request_logs import RequestLog, Usage
from gateway.stream_assembler import StreamAssembler
from gateway.tenant_keys import kms_request_id
from gateway.tenants import Tenant, TenantStore
from gateway.upstream import PASS_HEADERS, Upstream
from gateway.virtual_keys import VirtualKey, VirtualKeyStore

log = structlog.get_logger("gateway.proxy")

NO_STORE_HEADER = "x-gateway-no-store"
REQUEST_ID_HEADER = "x-gateway-request-id"


class CancellingStreamingResponse(StreamingResponse):
    """Streams, and stops (cancelling the upstream call) as soon as the client disconnects,
    even while no chunk is due: Starlette only notices on the next send otherwise."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            async def stream() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


class Proxy:
    def __init__(self, tenants: TenantStore, virtual_keys: VirtualKeyStore, vault: ProviderKeyVault,
                 request_log: RequestLog, rate_limits: RateLimits, upstream: Upstream) -> None:
        self._tenants = tenants
        self._virtual_keys = virtual_keys
        self._vault = vault
        self._log = request_log
        self._limits = rate_limits
        self._upstream = upstream
        self._background: set[asyncio.Task[None]] = set()

    # -- endpoints -------------------------------------------------------------------------

    async def list_models(self, authorization: str | None) -> Response:
        key, _ = await self._authenticate(authorization)
        creds = await self._credentials(key, None, None)
        _, response = await self._upstream.open(creds, "GET", "/models")
        try:
            body = json.loads(await response.aread())
        except (ValueError, HttpError):
            raise UpstreamError("the provider sent a malformed model list") from None
        finally:
            await response.aclose()
        if response.status_code != 200 or not isinstance(body, dict):
            raise UpstreamError(f"the provider answered {response.status_code}")
        data = [m for m in body.get("data") or []
                if isinstance(m, dict) and key.allows(str(m.get("id")))]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, authorization: str | None, body: Any,
                               headers: Mapping[str, str]) -> Response:
        key, tenant = await self._authenticate(authorization)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise InvalidRequestError("the body must be a JSON object with a 'model'")
        model: str = body["model"]
        if not key.allows(model):
            raise ModelNotAllowedError(f"this virtual key may not use model {model!r}")
        limit_headers = await self._limits.admit(key, tenant)
        request_id = "req_" + secrets.token_hex(12)
        store = headers.get(NO_STORE_HEADER, "").lower() not in ("1", "true", "yes")
        pii_mode = tenant.pii_mode
        forwarded = pii.redact_request(body) if pii_mode == "forward" else body
        record = None
        if store:
            stored = forwarded if pii_mode != "logs" else pii.redact_request(body)
            record = _Record(key, tenant, request_id, datetime.now(UTC),
                             await self._seal(key.tenant_id, request_id, "prompt",
                                              json.dumps(stored).encode()))
        creds = await self._credentials(key, model, request_id)
        provider_model = model.split("/", 1)[1] if "/" in model else model
        started = time.monotonic()
        meta = {"model": model, "virtual_key_id": key.id, "env": key.env,
                "stream": bool(body.get("stream")), "pii": pii_mode}
        try:
            cred, response = await self._upstream.open(
                creds, "POST", "/chat/completions", dict(forwarded, model=provider_model))
        except GatewayError as exc:  # the request is still attributed and logged
            self._finish(key, record, exc.status, started, Usage(), None, meta)
            raise
        meta.update(provider=cred.provider, provider_key_id=cred.id)
        out_headers = {**limit_headers, REQUEST_ID_HEADER: request_id,
                       **{h: response.headers[h] for h in PASS_HEADERS if h in response.headers}}
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                content = await response.aread()
            except HttpError:
                self._finish(key, record, 502, started, Usage(), None, meta)
                raise UpstreamError("the provider's answer broke off") from None
            finally:
                await response.aclose()
            usage = self._usage(content)
            await self._limits.charge_tokens(key, tenant, usage.total_tokens or 0)
            if record is not None and pii_mode != "off":
                stored_content = pii.redact_response_bytes(content)
            else:
                stored_content = content
            self._finish(key, record, response.status_code, started, usage, stored_content,
                         meta)
            return Response(content, status_code=response.status_code, headers=out_headers)
        out_headers.pop("content-type", None)
        return CancellingStreamingResponse(
            self._relay(response, key, tenant, record, started, meta),
            status_code=response.status_code, headers=out_headers,
            media_type="text/event-stream")

    # -- steps -----------------------------------------------------------------------------

    async def _authenticate(self, authorization: str | None) -> tuple[VirtualKey, Tenant]:
        """From memory when the key and tenant were read less than the cache TTL ago (no
        thread hop, no database); otherwise from the database in a worker thread."""
        presented = bearer(authorization)
        key = self._virtual_keys.try_authenticate(presented)
        if key is None:
            key = await asyncio.to_thread(self._virtual_keys.authenticate, presented)
        tenant = self._tenants.try_cached(key.tenant_id)
        if tenant is None:
            tenant = await asyncio.to_thread(self._tenants.cached, key.tenant_id)
        return key, tenant

    async def _seal(self, tenant_id: str, request_id: str, field: str, data: bytes) -> bytes:
        """Encrypt under the tenant's key: on the event loop with a cached data key, else in
        a worker thread (a call to the tenant's key service, which fails closed)."""
        blob = self._log.seal(tenant_id, request_id, field, data, blocking=False)
        if blob is not None:
            return blob
        return await asyncio.to_thread(self._seal_blocking, tenant_id, request_id, field, data)

    def _seal_blocking(self, tenant_id: str, request_id: str, field: str, data: bytes) -> bytes:
        token = kms_request_id.set(request_id)
        try:
            blob = self._log.seal(tenant_id, request_id, field, data)
            assert blob is not None
            return blob
        finally:
            kms_request_id.reset(token)

    async def _credentials(self, key: VirtualKey, model: str | None,
                           request_id: str | None) -> list[ProviderCredential]:
        creds = self._vault.resolve(key.tenant_id, model, blocking=False)
        if creds is not None:
            return creds

        def blocking() -> list[ProviderCredential]:
            token = kms_request_id.set(request_id)
            try:
                found = self._vault.resolve(key.tenant_id, model)
                assert found is not None
                return found
            finally:
                kms_request_id.reset(token)
        return await asyncio.to_thread(blocking)

    async def _relay(self, response: UpstreamResponse, key: VirtualKey, tenant: Tenant,
                     record: _Record | None, started: float,
                     meta: dict[str, Any]) -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        try:
            async for chunk in response.aiter_raw():
                assembler.feed(chunk)
                yield chunk
        except HttpError as exc:  # the provider broke off: the client's stream ends here
            log.warning("upstream_stream_broken", error=str(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
                completion = assembler.completion()
                usage = Usage.parse(completion["usage"])
                await self._limits.charge_tokens(key, tenant, usage.total_tokens or 0)
            if not assembler.done:
                log.info("stream_ended_early", request_id=record and record.request_id)
            if record is not None and tenant.pii_mode != "off":
                completion = pii.redact_completion(completion)
            self._finish(key, record, response.status_code, started, usage,
                         json.dumps(completion).encode(), meta)

    def _finish(self, key: VirtualKey, record: _Record | None, status: int, started: float,
                usage: Usage, response: bytes | None, meta: dict[str, Any]) -> None:
        """Log the request and queue its record (never waits: sealing the response and the
        metadata needs a KMS call only when no data key is cached, and then runs in a
        task of its own, so the client's answer is never held up by the log)."""
        latency_ms = int((time.monotonic() - started) * 1000)
        log.info("request", request_id=record.request_id if record else None,
                 tenant=key.tenant_id, virtual_key=key.id, status=status,
                 latency_ms=latency_ms, total_tokens=usage.total_tokens)
        if record is None:
            return
        meta_bytes = json.dumps(meta).encode()
        tenant_id, request_id = record.tenant.id, record.request_id
        response_blob = (None if response is None else self._log.seal(
            tenant_id, request_id, "response", response, blocking=False))
        meta_blob = self._log.seal(tenant_id, request_id, "meta", meta_bytes, blocking=False)
        if (response is None or response_blob is not None) and meta_blob is not None:
            self._write(record, status, latency_ms, usage, response_blob, meta_blob)
            return

        async def seal_then_write() -> None:
            try:
                rb = None if response is None else await self._seal(
                    tenant_id, request_id, "response", response)
                mb = await self._seal(tenant_id, request_id, "meta", meta_bytes)
            except GatewayError as exc:
                # The answer is already the client's; the record keeps its prompt only.
                log.warning("response_not_stored", request_id=request_id, error=exc.code)
                rb = mb = None
            self._write(record, status, latency_ms, usage, rb, mb)
        task = asyncio.get_running_loop().create_task(seal_then_write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _write(self, record: _Record, status: int, latency_ms: int, usage: Usage,
               response_blob: bytes | None, meta_blob: bytes | None) -> None:
        self._log.record(tenant_id=record.tenant.id, request_id=record.request_id,
                         virtual_key_id=record.key.id, created_at=record.created_at,
                         status=status, latency_ms=latency_ms, usage=usage,
                         prompt_blob=record.prompt_blob, response_blob=response_blob,
                         meta_blob=meta_blob)

    @staticmethod
    def _usage(content: bytes) -> Usage:
        try:
            return Usage.parse(json.loads(content).get("usage"))
        except (ValueError, AttributeError):
            return Usage()

    async def drain(self) -> None:
        """Wait for the pending log writes (at shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await asyncio.to_thread(self._log.flush)


@dataclass(slots=True)
class _Record:
    """What is known of a stored request before it is forwarded: its sealed prompt."""

    key: VirtualKey
    tenant: Tenant
    request_id: str
    created_at: datetime
    prompt_blob: bytes
