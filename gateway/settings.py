"""Gateway configuration from the environment, each value with a default for one machine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The published revocation bound (docs/gateway.md): cached data keys and decrypted
#: provider keys live at most this long in memory.
DEFAULT_CACHE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str
    rate_limit_storage: str = "memory://"
    #: max age of a cached data key (kms.envelope.DataKeyCache) and TTL of a decrypted
    #: provider key held in memory: the revocation bound.
    cache_seconds: float = DEFAULT_CACHE_SECONDS
    #: the principal the gateway names in its XKS calls (lands in the tenant's KMS audit log)
    principal_arn: str = "arn:aws:iam::000000000000:role/ai-gateway"
    kms_timeout_seconds: float = 2.0
    upstream_timeout_seconds: float = 60.0

    @property
    def master_key_path(self) -> Path:
        return self.home / "master.key"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("GATEWAY_HOME", "./var/gateway")).resolve()
        url = env.get("GATEWAY_DATABASE_URL") or f"sqlite:///{home / 'gateway.db'}"
        return cls(
            home=home,
            database_url=url,
            rate_limit_storage=env.get("GATEWAY_RATE_LIMIT_STORAGE", "memory://"),
            cache_seconds=float(env.get("GATEWAY_CACHE_SECONDS", DEFAULT_CACHE_SECONDS)),
            principal_arn=env.get("GATEWAY_PRINCIPAL_ARN",
                                  "arn:aws:iam::000000000000:role/ai-gateway"),
            kms_timeout_seconds=float(env.get("GATEWAY_KMS_TIMEOUT", "2.0")),
            upstream_timeout_seconds=float(env.get("GATEWAY_UPSTREAM_TIMEOUT", "60")),
        )
