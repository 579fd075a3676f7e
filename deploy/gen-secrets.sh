#!/usr/bin/env bash
# Generate what docker-compose.yml mounts, once (existing files are kept):
#   deploy/secrets/  pkcs11_pin, so_pin (SoftHSM token PINs), kms_db_password,
#                    gateway_db_password, kms_pgpass, gateway_pgpass (libpq password files)
#   deploy/certs/    ca.crt + ca.key (a private CA), xks.crt + xks.key (the TLS proxy's
#                    certificate for xks-proxy, localhost and $XKS_HOSTNAME)
# For AWS KMS the XKS endpoint needs a certificate from a public CA: replace
# deploy/certs/xks.crt (full chain) and xks.key with it. The gateway trusts ca.crt only
# because the compose file sets SSL_CERT_FILE to it; with a public certificate, drop that.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
host=${XKS_HOSTNAME:-xks.example.com}
umask 077
mkdir -p "$here/secrets" "$here/certs"
chmod 0700 "$here/secrets"

secret() { # FILE MODE: a random secret, unless the file exists
  local f=$here/secrets/$1
  [ -s "$f" ] || { openssl rand -base64 24 | tr -d '/+=\n' > "$f"; echo >> "$f"; }
  chmod "$2" "$f"
}
secret pkcs11_pin 0600
secret so_pin 0600
# The postgres image reads *_PASSWORD_FILE after dropping to its own user, so the password
# files must be readable by it (the directory stays 0700 on the host).
secret kms_db_password 0644
secret gateway_db_password 0644
printf 'postgres:5432:kms:kms:%s\n' "$(head -n1 "$here/secrets/kms_db_password")" \
  > "$here/secrets/kms_pgpass"
printf 'postgres:5432:gateway:gateway:%s\n' "$(head -n1 "$here/secrets/gateway_db_password")" \
  > "$here/secrets/gateway_pgpass"
chmod 0600 "$here/secrets/kms_pgpass" "$here/secrets/gateway_pgpass"

cd "$here/certs"
if [ ! -s ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=cmk deployment CA" -keyout ca.key -out ca.crt 2>/dev/null
fi
if [ ! -s xks.crt ]; then
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$host" \
    -keyout xks.key -out xks.csr 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:xks-proxy,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
    "$host" > xks.ext
  openssl x509 -req -in xks.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile xks.ext -out xks.crt 2>/dev/null
  rm -f xks.csr xks.ext ca.srl
fi
chmod 0644 ca.crt xks.crt
echo "secrets in $here/secrets, certificates in $here/certs (XKS host name: $host)"
