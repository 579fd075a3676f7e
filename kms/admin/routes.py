"""``/admin/v1``: the admin API. Each route parses, calls one service method, serializes.

The same service objects back the ``kms`` CLI (kms/keys/service.py, kms/tokens,
kms/xks/credential_store.py, kms/audit/log.py), so the API holds no lifecycle logic.
The role each route needs and the operation it is audited as are in its OpenAPI document
(``x-required-role``, ``x-audit-operation``); the matrix is in docs/operations.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.responses import StreamingResponse

from kms.admin.auth import Authenticator, Principal, bearer_scheme
from kms.admin.routing import OP_KEY, ROLE_KEY, AdminContext, admin_route_class
from kms.admin.schemas import (
    KEY_ID_PATTERN,
    STORE_NAME_PATTERN,
    TOKEN_NAME_PATTERN,
    AddCredentialIn,
    AuditHead,
    CheckpointList,
    CheckpointOut,
    CreateKeyIn,
    CreateStoreIn,
    CreateTokenIn,
    CredentialCreated,
    CredentialList,
    CredentialOut,
    DestroyIn,
    ErrorBody,
    ImportHsmKeyIn,
    KeyList,
    KeyOut,
    MinDecryptVersionIn,
    PublicKeyOut,
    RevokeIn,
    RulesIn,
    ScheduleDeletionIn,
    StoreList,
    StoreOut,
    TokenCreated,
    TokenList,
    TokenOut,
    WhoAmI,
)
from kms.audit.record import Operation
from kms.errors import KeyNotFoundError, ValidationError
from kms.runtime import Runtime
from kms.tokens import Role, TokenService
from kms.xks.authorization import parse_rules
from kms.xks.credentials import Secret, console_upload_json

PREFIX = "/admin/v1"
MAX_RECORDS_PER_CALL = 10_000
ERROR_SCHEMA_REF = "#/components/schemas/ErrorBody"


def _error(description: str) -> dict[str, Any]:
    """An error response in the OpenAPI document: an ErrorBody, by reference. Not
    ``{"model": ErrorBody}``, for which FastAPI builds a pydantic field per response of every
    route, twice (~0.25 s of every start, before the port opens); the schema itself is added
    to the document's components by :func:`add_error_schema`."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("ValidationException, InvalidStateException"),
    401: _error("AuthenticationFailedException: no valid bearer token (missing, unknown, "
                "expired or revoked)"),
    403: _error("AccessDeniedException: the token's role does not allow this"),
    404: _error("KeyNotFoundException"),
    409: _error("ConflictException, or a lifecycle transition the current state does not "
                "allow"),
    500: _error("InternalException (no details)"),
    503: _error("DependencyTimeoutException: the HSM, the database or the audit log is "
                "unavailable (fail closed)"),
    "4XX": _error("Any other client error"),
}


def add_error_schema(document: dict[str, Any]) -> None:
    """Add ErrorBody, which every admin route's error responses refer to, to an OpenAPI
    document's components."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"))


KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN, description="the XKS externalKeyId")]
StoreName = Annotated[str, Path(pattern=STORE_NAME_PATTERN)]
TokenName = Annotated[str, Path(pattern=TOKEN_NAME_PATTERN)]


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal  # set by AdminRoute before parsing
    return principal


Caller = Annotated[Principal, Depends(_principal)]


def _policy(role: Role, op: Operation) -> dict[str, Any]:
    return {ROLE_KEY: role.value, OP_KEY: op.value}


READ = _policy(Role.AUDITOR, Operation.ADMIN_READ)
EXPORT = _policy(Role.AUDITOR, Operation.AUDIT_EXPORT)


def admin_router(runtime: Runtime) -> APIRouter:
    """Every ``/admin/v1`` route, bound to ``runtime``'s services."""
    tokens = TokenService(runtime.engine, runtime.audit, runtime.clock)
    credentials = runtime.credentials
    keys = runtime.keys
    audit = runtime.audit
    ctx = AdminContext(Authenticator(tokens), runtime.audit)
    r = APIRouter(prefix=PREFIX, route_class=admin_route_class(ctx), responses=_ERRORS,
                  dependencies=[Security(bearer_scheme)])

    # -- who am I --------------------------------------------------------------------------

    @r.get("/whoami", tags=["tokens"], openapi_extra=READ)
    def whoami(caller: Caller) -> WhoAmI:
        """The calling token's name, role and expiry."""
        return WhoAmI(name=caller.name, role=caller.role, expiresAt=caller.expires_at)

    # -- keys ------------------------------------------------------------------------------

    @r.get("/keys", tags=["keys"], openapi_extra=READ)
    def list_keys(store: Annotated[str | None, Query(pattern=STORE_NAME_PATTERN)] = None,
                  ) -> KeyList:
        """Every key (optionally of one store) with its state and versions."""
        return KeyList(keys=[KeyOut.of(k) for k in keys.registry.list_keys(store)])

    @r.post("/keys", status_code=201, tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_CREATE))
    def create_key(body: CreateKeyIn, caller: Caller) -> KeyOut:
        """Create a key: a new AES-256 key in the HSM, version 1, state ENABLED."""
        return KeyOut.of(keys.create_key(body.keyId, frozenset(body.usage), caller.actor,
                                         body.store))

    @r.post("/keys/import-hsm", status_code=201, tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_IMPORT))
    def import_hsm_key(body: ImportHsmKeyIn, caller: Caller) -> KeyOut:
        """Register an AES key that already exists in the HSM, by its label."""
        return KeyOut.of(keys.import_hsm_key(body.keyId, body.label, frozenset(body.usage),
                                             caller.actor, body.store))

    @r.get("/keys/{key_id}", tags=["keys"], openapi_extra=READ)
    def show_key(key_id: KeyId) -> KeyOut:
        """One key, its state and versions."""
        return KeyOut.of(keys.registry.get_key(key_id))

    @r.post("/keys/{key_id}/rotate", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_ROTATE))
    def rotate_key(key_id: KeyId, caller: Caller) -> KeyOut:
        """Add a new primary version (a new HSM key); older versions still decrypt."""
        return KeyOut.of(keys.rotate(key_id, caller.actor))

    @r.post("/keys/{key_id}/min-decrypt-version", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_SET_MIN_DECRYPT_VERSION))
    def set_min_decrypt_version(key_id: KeyId, body: MinDecryptVersionIn,
                                caller: Caller) -> KeyOut:
        """Refuse to decrypt data made under versions older than this one."""
        return KeyOut.of(keys.set_min_decrypt_version(key_id, body.version, caller.actor))

    @r.put("/keys/{key_id}/rules", tags=["keys"],
           openapi_extra=_policy(Role.ADMIN, Operation.KEY_SET_RULES))
    def set_rules(key_id: KeyId, body: RulesIn, caller: Caller) -> KeyOut:
        """Secondary authorization: allow lists on XKS ``requestMetadata``; null clears."""
        text = (json.dumps(parse_rules(json.dumps(body.rules)), sort_keys=True)
                if body.rules else None)
        return KeyOut.of(keys.set_rules(key_id, text, caller.actor))

    @r.post("/keys/{key_id}/revoke", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_REVOKE))
    def revoke_key(key_id: KeyId, body: RevokeIn, caller: Caller) -> KeyOut:
        """The kill switch: ENABLED -> DISABLED; every replica refuses the key within 1 s."""
        return KeyOut.of(keys.revoke(key_id, body.reason, caller.actor))

    @r.post("/keys/{key_id}/enable", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_ENABLE))
    def enable_key(key_id: KeyId, caller: Caller) -> KeyOut:
        """DISABLED -> ENABLED."""
        return KeyOut.of(keys.enable(key_id, caller.actor))

    @r.post("/keys/{key_id}/schedule-deletion", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_SCHEDULE_DELETION))
    def schedule_deletion(key_id: KeyId, body: ScheduleDeletionIn, caller: Caller) -> KeyOut:
        """-> PENDING_DELETION: refused from now on, destroyed when the wait is over."""
        return KeyOut.of(keys.schedule_deletion(key_id, body.days, caller.actor))

    @r.post("/keys/{key_id}/cancel-deletion", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_CANCEL_DELETION))
    def cancel_deletion(key_id: KeyId, caller: Caller) -> KeyOut:
        """PENDING_DELETION -> DISABLED."""
        return KeyOut.of(keys.cancel_deletion(key_id, caller.actor))

    @r.post("/keys/{key_id}/destroy", tags=["keys"],
            openapi_extra=_policy(Role.ADMIN, Operation.KEY_DESTROY))
    def destroy_key(key_id: KeyId, body: DestroyIn, caller: Caller) -> KeyOut:
        """Crypto-shred now (irreversible): the key must be DISABLED or PENDING_DELETION."""
        if body.confirm != key_id:
            raise ValidationError("confirm must repeat the key id")
        return KeyOut.of(keys.destroy(key_id, caller.actor))

    # -- key stores ------------------------------------------------------------------------

    @r.get("/stores", tags=["stores"], openapi_extra=READ)
    def list_stores() -> StoreList:
        """Every key store."""
        return StoreList(stores=[StoreOut.of(s) for s in keys.registry.list_stores()])

    @r.post("/stores", status_code=201, tags=["stores"],
            openapi_extra=_policy(Role.ADMIN, Operation.STORE_CREATE))
    def create_store(body: CreateStoreIn, caller: Caller) -> StoreOut:
        """Create a key store with its XKS URI path prefix (add credentials next)."""
        return StoreOut.of(keys.create_store(body.name, body.uriPrefix, caller.actor))

    @r.get("/stores/{store}", tags=["stores"], openapi_extra=READ)
    def show_store(store: StoreName) -> StoreOut:
        return StoreOut.of(keys.registry.get_store(store))

    @r.post("/stores/{store}/disable", tags=["stores"],
            openapi_extra=_policy(Role.ADMIN, Operation.STORE_DISABLE))
    def disable_store(store: StoreName, caller: Caller) -> StoreOut:
        """Refuse every key of the store (reversible)."""
        keys.set_store_enabled(store, False, caller.actor)
        return StoreOut.of(keys.registry.get_store(store))

    @r.post("/stores/{store}/enable", tags=["stores"],
            openapi_extra=_policy(Role.ADMIN, Operation.STORE_ENABLE))
    def enable_store(store: StoreName, caller: Caller) -> StoreOut:
        keys.set_store_enabled(store, True, caller.actor)
        return StoreOut.of(keys.registry.get_store(store))

    # -- XKS credentials (admin only: they are secrets' names) -----------------------------

    @r.get("/stores/{store}/credentials", tags=["credentials"],
           openapi_extra=_policy(Role.ADMIN, Operation.ADMIN_READ))
    def list_credentials(store: StoreName) -> CredentialList:
        """The access key ids of a store's SigV4 credentials (never the secrets)."""
        keys.registry.get_store(store)
        return CredentialList(credentials=[
            CredentialOut(accessKeyId=c.access_key_id, store=c.store, createdAt=c.created_at)
            for c in credentials.list(store)])

    @r.post("/stores/{store}/credentials", status_code=201, tags=["credentials"],
            openapi_extra=_policy(Role.ADMIN, Operation.CREDENTIAL_ADD))
    def add_credential(store: StoreName, body: AddCredentialIn,
                       caller: Caller) -> CredentialCreated:
        """Add a SigV4 credential; a generated secret is returned once, never again."""
        given = Secret(body.secret) if body.secret is not None else None
        akid, secret = credentials.add(store, body.accessKeyId, given, caller.actor)
        if given is not None:
            return CredentialCreated(accessKeyId=akid, store=store, secret=None)
        prefix = keys.registry.get_store(store).uri_prefix
        return CredentialCreated(accessKeyId=akid, store=store, secret=secret.reveal(),
                                 console=console_upload_json(prefix, akid, secret))

    @r.delete("/stores/{store}/credentials/{access_key_id}", status_code=204,
              tags=["credentials"],
              openapi_extra=_policy(Role.ADMIN, Operation.CREDENTIAL_REMOVE))
    def remove_credential(store: StoreName,
                          access_key_id: Annotated[str, Path(max_length=64)],
                          caller: Caller) -> None:
        """Remove a credential: refused on the next request, in every process."""
        credentials.remove(store, access_key_id, caller.actor)

    # -- tokens (admin only) ---------------------------------------------------------------

    @r.get("/tokens", tags=["tokens"], openapi_extra=_policy(Role.ADMIN, Operation.ADMIN_READ))
    def list_tokens() -> TokenList:
        """Every admin API token (names, roles, expiry; never the tokens)."""
        return TokenList(tokens=[TokenOut.of(t) for t in tokens.list()])

    @r.post("/tokens", status_code=201, tags=["tokens"],
            openapi_extra=_policy(Role.ADMIN, Operation.TOKEN_CREATE))
    def create_token(body: CreateTokenIn, caller: Caller) -> TokenCreated:
        """Create a token; it is in this response and nowhere else, ever."""
        info, token = tokens.create(body.name, body.role, caller.actor,
                                    expires_in_days=body.expiresInDays)
        return TokenCreated(name=info.name, role=info.role, token=token,
                            expiresAt=info.expires_at)

    @r.post("/tokens/{name}/revoke", tags=["tokens"],
            openapi_extra=_policy(Role.ADMIN, Operation.TOKEN_REVOKE))
    def revoke_token(name: TokenName, caller: Caller) -> TokenOut:
        """Revoke a token: refused from the next request on."""
        return TokenOut.of(tokens.revoke(name, caller.actor))

    # -- audit log export ------------------------------------------------------------------

    @r.get("/audit/public-key", tags=["audit"], openapi_extra=EXPORT)
    def audit_public_key() -> PublicKeyOut:
        """The checkpoint signing key (EC P-256, PEM). Obtain it out of band to trust it."""
        return PublicKeyOut(publicKeyPem=audit.public_key_pem.decode("ascii"),
                            keyName=audit.key_name, origin=audit.origin)

    @r.get("/audit/head", tags=["audit"], openapi_extra=EXPORT)
    def audit_head() -> AuditHead:
        """The log's current size, last record hash and Merkle root (unsigned)."""
        head = audit.head()
        return AuditHead(size=head.size, lastHash=head.last_hash,
                         rootHash=base64.b64encode(head.frontier.root()).decode("ascii"))

    @r.get("/audit/checkpoints", tags=["audit"], openapi_extra=EXPORT)
    def audit_checkpoints() -> CheckpointList:
        """Every stored signed checkpoint, by tree size."""
        return CheckpointList(checkpoints=audit.checkpoints())

    @r.get("/audit/checkpoints/latest", tags=["audit"], openapi_extra=EXPORT)
    def audit_latest_checkpoint() -> CheckpointOut:
        """The largest signed checkpoint."""
        latest = audit.latest_checkpoint()
        if latest is None:
            raise KeyNotFoundError("no checkpoint has been signed yet")
        return CheckpointOut(note=latest[0], createdAt=latest[1])

    @r.get("/audit/records", tags=["audit"], openapi_extra=EXPORT,
           response_class=StreamingResponse,
           responses={200: {"description": "JSON lines: one canonical record per line, "
                            "exactly the bytes that are hashed",
                            "content": {"application/x-ndjson": {
                                "schema": {"type": "string"}}}}})
    def audit_records(
        start: Annotated[int, Query(ge=0, le=2**53 - 1, description="first seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_RECORDS_PER_CALL)] = 1000,
    ) -> StreamingResponse:
        """Records ``start`` .. ``start + limit - 1`` (fewer at the end of the log)."""

        def lines() -> Iterator[bytes]:
            for body in audit.records(start, start + limit):
                yield body + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return r
