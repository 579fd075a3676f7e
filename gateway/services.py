"""Wiring: builds the gateway's services from settings (shared by the CLI and the server)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.db import make_engine
from gateway.master_key import MasterKey
from gateway.provider_keys import ProviderKeyVault
from gateway.request_logs import RequestLog
from gateway.settings import Settings
from gateway.tenant_keys import TenantKeys
from gateway.tenants import TenantStore
from gateway.virtual_keys import VirtualKeyStore


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    tenants: TenantStore
    tenant_keys: TenantKeys
    provider_keys: ProviderKeyVault
    virtual_keys: VirtualKeyStore
    request_log: RequestLog

    def close(self) -> None:
        self.request_log.close()
        self.tenant_keys.close()
        self.engine.dispose()


def build_services(settings: Settings, *, engine: Engine | None = None,
                   master_key: MasterKey | None = None) -> Services:
    engine = engine or make_engine(settings.database_url)
    master_key = master_key or MasterKey.load(settings.master_key_path)
    tenants = TenantStore(engine, master_key, ttl_seconds=settings.cache_seconds)
    tenant_keys = TenantKeys(tenants, settings)
    return Services(
        settings=settings,
        engine=engine,
        tenants=tenants,
        tenant_keys=tenant_keys,
        provider_keys=ProviderKeyVault(engine, tenant_keys, ttl_seconds=settings.cache_seconds),
        virtual_keys=VirtualKeyStore(engine, master_key, ttl_seconds=settings.cache_seconds),
        request_log=RequestLog(engine, tenant_keys),
    )
