"""Request and response models of the admin API (they are the OpenAPI schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kms.keys.model import KeyRecord, KeyState, KeyStore, KeyUsage
from kms.tokens import Role, TokenInfo

KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
STORE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
URI_PREFIX_PATTERN = r"^/?[A-Za-z0-9/_-]{1,100}$"
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # noqa: S105 - a name pattern
ACCESS_KEY_ID_PATTERN = r"^[A-Z2-7]{20,30}$"


class Model(BaseModel):
    """Strict request bodies: unknown fields are a 400, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    errorName: str = Field(examples=["KeyNotFoundException"])
    errorMessage: str


# -- keys -----------------------------------------------------------------------------------

class KeyVersionOut(BaseModel):
    version: int
    imported: bool
    createdAt: str


class KeyOut(BaseModel):
    keyId: str
    store: str
    usage: list[KeyUsage]
    state: KeyState
    primaryVersion: int
    minDecryptVersion: int
    deletionDue: str | None
    createdAt: str
    updatedAt: str
    storeEnabled: bool
    versions: list[KeyVersionOut]

    @classmethod
    def of(cls, key: KeyRecord) -> KeyOut:
        return cls.model_validate(key.to_json())


class KeyList(BaseModel):
    keys: list[KeyOut]


class CreateKeyIn(Model):
    keyId: str = Field(pattern=KEY_ID_PATTERN)
    store: str = Field(default="default", pattern=STORE_NAME_PATTERN)
    usage: list[KeyUsage] = Field(default=[KeyUsage.ENCRYPT, KeyUsage.DECRYPT], max_length=2,
                                  description="any subset of ENCRYPT, DECRYPT; [] for none")


class ImportHsmKeyIn(CreateKeyIn):
    label: str = Field(min_length=1, max_length=200, description="label of an existing "
                       "sensitive, non-extractable AES key in the HSM")


class RevokeIn(Model):
    reason: str = Field(min_length=1, max_length=500)


class RulesIn(Model):
    rules: dict[str, list[str]] | None = Field(
        description="allow lists by requestMetadata field (awsPrincipalArn, kmsKeyArn, "
        "kmsViaService, awsSourceVpce); null removes every rule")


class ScheduleDeletionIn(Model):
    days: int = Field(ge=0, le=30, description="waiting period (7-30 days in production)")


class DestroyIn(Model):
    confirm: str = Field(description="repeat the key id to confirm", max_length=128)


class MinDecryptVersionIn(Model):
    version: int = Field(ge=1, le=2**31 - 1)


# -- stores and credentials ----------------------------------------------------------------

class StoreOut(BaseModel):
    name: str
    uriPrefix: str
    enabled: bool
    throttleRps: int | None
    createdAt: str

    @classmethod
    def of(cls, store: KeyStore) -> StoreOut:
        return cls(name=store.name, uriPrefix=store.uri_prefix, enabled=store.enabled,
                   throttleRps=store.throttle_rps, createdAt=store.created_at)


class StoreList(BaseModel):
    stores: list[StoreOut]


class CreateStoreIn(Model):
    name: str = Field(pattern=STORE_NAME_PATTERN)
    uriPrefix: str = Field(pattern=URI_PREFIX_PATTERN)


class CredentialOut(BaseModel):
    accessKeyId: str
    store: str
    createdAt: str


class CredentialList(BaseModel):
    credentials: list[CredentialOut]


class AddCredentialIn(Model):
    accessKeyId: str | None = Field(default=None, pattern=ACCESS_KEY_ID_PATTERN,
                                    description="generated when absent")
    secret: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+/=]{43,64}$",
                               description="generated (256 bits) when absent")


class CredentialCreated(BaseModel):
    accessKeyId: str
    store: str
    secret: str | None = Field(description="present only when the service generated it: "
                               "shown once, never again")
    console: dict[str, Any] | None = Field(
        default=None, description="the AWS KMS console upload object, when the secret "
        "was generated")


# -- tokens ---------------------------------------------------------------------------------

class TokenOut(BaseModel):
    name: str
    role: Role
    createdAt: str
    expiresAt: str | None
    revoked: bool

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls.model_validate(info.to_json())


class TokenList(BaseModel):
    tokens: list[TokenOut]


class CreateTokenIn(Model):
    name: str = Field(pattern=TOKEN_NAME_PATTERN)
    role: Role
    expiresInDays: int | None = Field(default=None, ge=1, le=3650)


class TokenCreated(BaseModel):
    name: str
    role: Role
    token: str = Field(description="the bearer token: shown once, stored only as a hash")
    expiresAt: str | None


class WhoAmI(BaseModel):
    name: str
    role: Role
    expiresAt: str | None


# -- audit ----------------------------------------------------------------------------------

class AuditHead(BaseModel):
    size: int
    lastHash: str
    rootHash: str = Field(description="RFC 6962 root of the current tree, base64")


class PublicKeyOut(BaseModel):
    publicKeyPem: str
    keyName: str
    origin: str


class CheckpointOut(BaseModel):
    note: str = Field(description="C2SP tlog-checkpoint signed note")
    createdAt: str


class CheckpointList(BaseModel):
    checkpoints: list[str]
