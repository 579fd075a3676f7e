"""The gateway's OpenAPI document, written by hand from the code, served at ``GET /openapi.json``.

It describes the three routes of :mod:`gateway.routes` as they behave (the HTTP edge has no
validation layer that could generate it): what :mod:`gateway.routes` and
:class:`gateway.proxy.Proxy` check themselves, the statuses of :mod:`gateway.errors`, and
what is the provider's answer passed through unchanged. ``tests/gateway/test_schemathesis.py``
runs schemathesis against the live document; keep the two in step when a route changes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ERROR_REF}}}


_RATE_HEADERS: dict[str, Any] = {
    f"x-ratelimit-{what}-{kind}": {
        "description": f"{what} of the {kind}-per-minute limit (keys with that limit only)",
        "schema": {"type": "string"}}
    for what in ("limit", "remaining", "reset") for kind in ("requests", "tokens")}

_REQUEST_ID_HEADER: dict[str, Any] = {
    "x-gateway-request-id": {
        "description": "The id of this request in `gateway logs`.",
        "required": True, "schema": {"type": "string", "pattern": "^req_[0-9a-f]{24}$"}}}

_PASSED_THROUGH = ("content-type, openai-processing-ms, openai-version and x-request-id of "
                   "the provider's answer are passed through.")

_GATEWAY_ERRORS: dict[str, Any] = {
    "401": _error("`invalid_api_key`: no bearer token, or an unknown, revoked or expired "
                  "virtual key."),
    "403": _error("`customer_key_revoked`: the tenant's key service refuses (key revoked, "
                  "disabled or deleted, or the gateway's credential refused)."),
    "500": _error("`internal_error` or `stored_data_unreadable`: a fault of the gateway or of "
                  "its stored data, never of the request."),
    "502": _error("`upstream_error`: the provider could not be reached, broke off its answer "
                  "or (model list) answered something other than a 200 JSON object."),
    "503": _error("`customer_key_unreachable`: the tenant's key service does not answer; or "
                  "`no_provider_key`: the tenant has no provider key."),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "AI gateway",
        "version": "1",
        "description": (
            "An OpenAI-compatible proxy for many tenants (docs/gateway.md). Clients "
            "authenticate with a virtual key (`Authorization: Bearer gwk-…`). Errors of the "
            "gateway have OpenAI's shape `{\"error\": {\"message\", \"type\", \"code\", "
            "\"param\"}}`. A method a path does not have is answered 405 "
            "`method_not_allowed` with `Allow`, an unknown path 404 `not_found`; "
            "`GET /openapi.json` (this document) needs no key."),
    },
    "paths": {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers (no database or key-service call).",
                "security": [],
                "responses": {
                    "200": {"description": "Alive.", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["status"],
                                   "properties": {"status": {"type": "string",
                                                             "enum": ["ok"]}},
                                   "additionalProperties": False}}}},
                },
            },
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The provider's model list, filtered to the virtual key's models.",
                "description": (
                    "Asks the provider of the tenant's oldest provider key (`GET /models`, "
                    "with failover over that provider's keys) and keeps the entries whose "
                    "`id` the virtual key allows (all, for a key without a model list)."),
                "responses": {
                    "200": {"description": "The filtered list.", "content": {
                        "application/json": {"schema": {
                            "$ref": "#/components/schemas/ModelList"}}}},
                    **_GATEWAY_ERRORS,
                },
            },
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "Forward a chat completion to the tenant's provider.",
                "description": (
                    "The gateway checks only the body's size (at most 8 MiB) and that it is "
                    "a JSON object with a string `model`; the rest of the body (`messages`, "
                    "`stream`, tools, sampling parameters, ...) is the provider's to check "
                    "and is forwarded unchanged, with `model` stripped of a `provider/` "
                    "prefix. That prefix picks one of the tenant's providers (otherwise the "
                    "provider of its oldest key). The request is tried with each of that "
                    "provider's keys in turn, moving on when the provider answers 429 or 5xx "
                    "or cannot be reached. The provider's answer, whatever its status, is "
                    "passed through unchanged: a stream (`text/event-stream`) chunk by chunk, "
                    "anything else as it came. " + _PASSED_THROUGH),
                "parameters": [{
                    "name": "x-gateway-no-store", "in": "header", "required": False,
                    "description": "`1`, `true` or `yes`: nothing of this request is stored.",
                    "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}},
                "responses": {
                    "200": {
                        "description": "The provider's answer: a completion object, or with "
                                       "`\"stream\": true` its server-sent events.",
                        "headers": {**_REQUEST_ID_HEADER, **_RATE_HEADERS},
                        "content": {
                            "application/json": {"schema": {
                                "$ref": "#/components/schemas/ChatCompletion"}},
                            # Open API 3.0: the schema of one event of the stream
                            "text/event-stream": {"schema": {
                                "$ref": "#/components/schemas/ServerSentEvent"}},
                        },
                    },
                    "400": _error("`invalid_request`: the body is larger than 8 MiB, is not "
                                  "valid JSON (both checked before the virtual key), or is not "
                                  "an object with a string `model`. A body the provider "
                                  "refuses (e.g. no `messages`) is the provider's own 400, "
                                  "passed through with `x-gateway-request-id`."),
                    **_GATEWAY_ERRORS,
                    "403": _error("`model_not_allowed`: the model is not in the virtual "
                                  "key's list; or `customer_key_revoked`: the tenant's key "
                                  "service refuses (key revoked, disabled or deleted, or the "
                                  "gateway's credential refused)."),
                    "429": {
                        "description": "`rate_limit_exceeded`: over the virtual key's or the "
                                       "tenant's requests or tokens per minute. (The "
                                       "provider's own 429, after failover, is passed through "
                                       "instead, without `retry-after` from the gateway.)",
                        "headers": {
                            "retry-after": {"description": "Seconds until a retry can pass "
                                                           "(on the gateway's own 429).",
                                            "schema": {"type": "string",
                                                       "pattern": "^[0-9]+$"}},
                            **_RATE_HEADERS},
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                    "default": {
                        "description": "Any other status is the provider's own answer, passed "
                                       "through unchanged (body and content type are the "
                                       "provider's; an OpenAI-compatible provider sends the "
                                       "error shape below).",
                        "headers": _REQUEST_ID_HEADER,
                        "content": {"*/*": {"schema": {}}},
                    },
                },
            },
        },
    },
    "components": {
        "securitySchemes": {
            "virtualKey": {"type": "http", "scheme": "bearer",
                           "description": "A virtual key, `gwk-<env>-…` "
                                          "(`gateway virtual-keys create`)."},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["message", "type", "code", "param"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": "string", "nullable": True},
                        "param": {"type": "string", "nullable": True},
                    },
                }},
            },
            "Message": {
                "type": "object",
                "required": ["role"],
                "description": "Forwarded as it is (the provider checks it). A string "
                               "`content`, or the `text` of `{\"type\": \"text\"}` parts, "
                               "is what PII redaction reads and may replace.",
                "properties": {
                    "role": {"type": "string",
                             "example": "user"},
                    "content": {
                        "nullable": True,
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "object"}},
                        ],
                    },
                },
                "additionalProperties": True,
            },
            "ChatCompletionRequest": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string",
                              "description": "`model` or `provider/model`; must be in the "
                                             "virtual key's list when it has one."},
                    "messages": {"type": "array", "minItems": 1,
                                 "description": "Required by the provider; the gateway "
                                                "forwards it unchecked.",
                                 "items": {"$ref": "#/components/schemas/Message"}},
                    "stream": {"type": "boolean",
                               "description": "Forwarded; the provider's answer decides "
                                              "whether it is relayed as a stream."},
                    "stream_options": {
                        "type": "object",
                        "properties": {"include_usage": {"type": "boolean"}},
                        "description": "Forwarded; with `include_usage` the stream's usage "
                                       "counts against the key's tokens per minute."},
                },
                "additionalProperties": True,
            },
            "ChatCompletion": {
                "type": "object",
                "description": "The provider's completion, unchanged; its `usage` counts "
                               "against the key's tokens per minute.",
                "properties": {
                    "id": {"type": "string"},
                    "object": {"type": "string"},
                    "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object"}},
                    "usage": {"type": "object", "nullable": True},
                },
            },
            "ServerSentEvent": {
                "type": "object",
                "description": "One event of the provider's stream, passed through.",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string",
                             "description": "A JSON `chat.completion.chunk`, or `[DONE]` at "
                                            "the end."},
                    "event": {"type": "string"},
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            },
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"type": "string", "enum": ["list"]},
                    "data": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}}}},
                },
                "additionalProperties": False,
            },
        },
    },
    "security": [{"virtualKey": []}],
}


async def openapi_json(_: Request) -> Response:
    """``GET /openapi.json``: the document above (no authentication)."""
    return JSONResponse(OPENAPI)
