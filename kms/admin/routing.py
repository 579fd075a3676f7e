"""The admin route class: authentication, error mapping and read auditing in one place.

Every admin route is an :class:`AdminRoute`. Before anything of the request is parsed, it
checks the bearer token against the role the route needs (``x-required-role`` in the
route's OpenAPI extra), so an unauthenticated caller learns nothing from validation
messages. Then it maps errors, for this router only:

* :class:`~kms.errors.KmsError` -> its ``http_status`` and ``{"errorName", "errorMessage"}``;
* request validation -> 400 ``ValidationException`` (never FastAPI's 422 body);
* anything else -> 500 ``InternalException`` without details (the type name is logged).

Auditing: changes are audited by the service that makes them (with the token's name as
actor); reads are audited here as ``admin.read`` / ``audit.export`` after the handler ran,
and fail closed (a read whose record cannot be written answers 503, not the data); every
denial (401, 403) is audited with outcome ``denied``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from kms.admin.auth import UNAUTHENTICATED, Authenticator, Principal
from kms.audit.event import AuditEvent, AuditSink
from kms.audit.record import Actor, Operation, Outcome
from kms.errors import (
    AccessDeniedError,
    AuthenticationFailedError,
    InternalError,
    KmsError,
    ValidationError,
)
from kms.logging import get_logger
from kms.request_log import ACTOR_STATE, ERROR_STATE
from kms.tokens import Role

ROLE_KEY = "x-required-role"
OP_KEY = "x-audit-operation"
MAX_VALIDATION_DETAIL = 3

log = get_logger("kms.admin")


def error_response(exc: KmsError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errorName": exc.error_name, "errorMessage": exc.message},
                        status_code=exc.http_status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """Where and what, never the offending input (it may be a secret)."""
    parts = []
    for err in list(exc.errors())[:MAX_VALIDATION_DETAIL]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


class AdminContext:
    """What the admin route class needs: the authenticator and the audit sink."""

    def __init__(self, authenticator: Authenticator, audit: AuditSink) -> None:
        self.authenticator = authenticator
        self.audit = audit


def admin_route_class(ctx: AdminContext) -> type[APIRoute]:
    class AdminRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            original = super().get_route_handler()
            extra = self.openapi_extra or {}
            needed = Role(extra[ROLE_KEY])
            op = Operation(extra[OP_KEY])
            is_read = (self.methods or set()) <= {"GET", "HEAD"}
            template = self.path_format

            async def handler(request: Request) -> Response:
                principal: Principal | None = None
                try:
                    principal = await asyncio.to_thread(
                        ctx.authenticator.identify, request.headers.get("authorization"))
                    setattr(request.state, ACTOR_STATE, principal.name)
                    ctx.authenticator.authorize(principal, needed)
                    request.state.principal = principal
                    response = await original(request)
                    if is_read:
                        await _audit(ctx, op, principal.actor, Outcome.OK, None, template)
                    return response
                except RequestValidationError as exc:
                    return _fail(request, ValidationError(validation_message(exc)))
                except HTTPException as exc:  # e.g. a body that is not UTF-8 JSON
                    if not 400 <= exc.status_code < 500:
                        return _fail(request, InternalError("internal error"))
                    bad = ValidationError("invalid request body")
                    bad.http_status = exc.status_code
                    return _fail(request, bad)
                except (AuthenticationFailedError, AccessDeniedError) as exc:
                    actor = principal.actor if principal is not None else UNAUTHENTICATED
                    await _audit_quietly(ctx, op, actor, Outcome.DENIED, exc.error_name,
                                         template)
                    headers = ({"WWW-Authenticate": 'Bearer realm="kms-admin"'}
                               if isinstance(exc, AuthenticationFailedError) else None)
                    return _fail(request, exc, headers)
                except KmsError as exc:
                    if is_read and principal is not None:
                        await _audit_quietly(ctx, op, principal.actor, Outcome.ERROR,
                                             exc.error_name, template)
                    return _fail(request, exc)
                except Exception as exc:
                    log.error("admin_request_failed", route=template,
                              error_type=type(exc).__name__)
                    return _fail(request, InternalError("internal error"))

            return handler

    return AdminRoute


def _fail(request: Request, exc: KmsError,
          headers: dict[str, str] | None = None) -> JSONResponse:
    setattr(request.state, ERROR_STATE, exc.error_name)
    return error_response(exc, headers)


async def _audit(ctx: AdminContext, op: Operation, actor: Actor, outcome: Outcome,
                 error: str | None, route: str) -> None:
    event = AuditEvent(op=op, outcome=outcome, actor=actor, error=error,
                       detail={"route": route})
    await asyncio.to_thread(ctx.audit.append, event)


async def _audit_quietly(ctx: AdminContext, op: Operation, actor: Actor, outcome: Outcome,
                         error: str | None, route: str) -> None:
    """Audit a refusal; if the log is down the refusal stands anyway."""
    try:
        await _audit(ctx, op, actor, outcome, error, route)
    except Exception as exc:
        log.warning("audit_append_failed", route=route, error_type=type(exc).__name__)
