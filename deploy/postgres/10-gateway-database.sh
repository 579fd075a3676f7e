#!/bin/sh
# Run once by the postgres image when its data volume is empty (docker-entrypoint-initdb.d):
# the gateway's own role and database beside the KMS's (POSTGRES_USER/POSTGRES_DB = kms).
set -eu
password=$(head -n1 /run/secrets/gateway_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$password" <<'SQL'
CREATE ROLE gateway LOGIN PASSWORD :'pw';
CREATE DATABASE gateway OWNER gateway;
REVOKE ALL ON DATABASE gateway FROM PUBLIC;
REVOKE ALL ON DATABASE kms FROM PUBLIC;
SQL
