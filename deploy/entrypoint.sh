#!/bin/sh
# Entrypoint of the deploy/Dockerfile image. Runs as root only long enough to
#  1. copy the mounted secrets (/run/secrets/*) to a private 0600 copy owned by `cmk`
#     (compose secrets outside swarm keep the host file's owner and mode), and
#  2. make sure the state volumes belong to `cmk`,
# then runs the command as `cmk`. Commands:
#   softhsm-setup   create the shared SoftHSM token (idempotent)
#   kms-init        `kms init` against the shared database and token (idempotent)
#   kms-serve       `kms serve` on 0.0.0.0:8000
#   gateway-serve   `gateway init` (idempotent), then `gateway serve` on 0.0.0.0:8100
#   anything else   run as is (e.g. `kms keys create orders`, `gateway tenants list`)
set -eu

if [ "$(id -u)" = 0 ]; then
  private=/run/cmk-secrets
  mkdir -p "$private"
  chmod 0700 "$private"
  if [ -d /run/secrets ]; then
    for f in /run/secrets/*; do
      [ -f "$f" ] || continue
      install -m 0600 -o cmk -g cmk "$f" "$private/$(basename "$f")"
    done
  fi
  chown cmk:cmk "$private"
  for d in /var/lib/softhsm-shared /var/lib/kms /var/lib/gateway; do
    [ -d "$d" ] && chown cmk:cmk "$d"
  done
  # libpq reads the database password from this file (format host:port:db:user:password)
  [ -f "$private/pgpass" ] && export PGPASSFILE="$private/pgpass"
  [ -f "$private/pkcs11_pin" ] && export KMS_PKCS11_PIN_FILE="$private/pkcs11_pin"
  # CMK_EXTRA_CA_FILE: a private CA to trust on top of the system's (the gateway calling the
  # XKS proxy's private certificate). SSL_CERT_FILE alone would replace the system CAs, and
  # the gateway's calls to its LLM providers need those.
  if [ -n "${CMK_EXTRA_CA_FILE:-}" ]; then
    cat /etc/ssl/certs/ca-certificates.crt "$CMK_EXTRA_CA_FILE" > "$private/ca-bundle.pem"
    chmod 0644 "$private/ca-bundle.pem"
    export SSL_CERT_FILE="$private/ca-bundle.pem"
  fi
  exec setpriv --reuid=cmk --regid=cmk --init-groups env HOME=/home/cmk "$0" "$@"
fi

case "${1:-}" in
  softhsm-setup)
    export SOFTHSM_PIN_FILE=/run/cmk-secrets/pkcs11_pin SOFTHSM_SO_PIN_FILE=/run/cmk-secrets/so_pin
    exec /opt/cmk/softhsm-setup/create-token.sh /var/lib/softhsm-shared \
      "${KMS_PKCS11_TOKEN_LABEL:-kms}"
    ;;
  kms-init)
    exec kms init --uri-prefix "${KMS_URI_PREFIX:-xks}"
    ;;
  kms-serve)
    exec kms serve --host 0.0.0.0 --port 8000
    ;;
  gateway-serve)
    gateway init
    exec gateway serve --host 0.0.0.0 --port 8100
    ;;
  *)
    exec "$@"
    ;;
esac
