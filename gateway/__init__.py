"""The AI gateway: an OpenAI-compatible proxy whose tenants' secrets and logs are encrypted
under each tenant's own key, reached over XKS (design §2, issue 7; docs/gateway.md).

Where things are:

- ``settings``: configuration from the environment (GATEWAY_HOME, GATEWAY_DATABASE_URL...)
- ``db``: the schema and the engine (SQLite by default, PostgreSQL too)
- ``master_key``: the gateway's own key file (seals XKS credentials, keys the hashes)
- ``tenants``: tenants and their XKS binding; ``tenant_keys``: per-tenant envelope encryption
- ``provider_keys``: the BYOK vault; ``virtual_keys``: the keys clients present
- ``rate_limits``, ``request_logs``, ``upstream``: one concept each
- ``proxy``: the request flow; ``routes``/``app``: the HTTP edge; ``cli``: the CLI
"""
