#!/usr/bin/env bash
# Create a SoftHSM2 token idempotently.
#
#   create-token.sh DIR LABEL
#
# PIN and SO PIN come from the environment (SOFTHSM_PIN, SOFTHSM_SO_PIN) or from the files
# named by SOFTHSM_PIN_FILE / SOFTHSM_SO_PIN_FILE, never from the command line (where other
# users could read them in the process table). Writes DIR/softhsm2.conf (from the template
# beside this script) with its token directory DIR/tokens, and creates the token LABEL in it
# unless a token with that label exists already. Prints the path of the config file.
set -euo pipefail

usage() { echo "usage: $0 DIR LABEL  (PIN via SOFTHSM_PIN or SOFTHSM_PIN_FILE, SO PIN via SOFTHSM_SO_PIN or SOFTHSM_SO_PIN_FILE)" >&2; exit 2; }
[ $# -eq 2 ] || usage
dir=$1
label=$2
here=$(cd "$(dirname "$0")" && pwd)

read_secret() { # NAME FILE_VAR_NAME
  local value=${!1:-} file_var=$2
  if [ -z "$value" ] && [ -n "${!file_var:-}" ]; then value=$(head -n1 "${!file_var}"); fi
  printf '%s' "$value"
}
pin=$(read_secret SOFTHSM_PIN SOFTHSM_PIN_FILE)
so_pin=$(read_secret SOFTHSM_SO_PIN SOFTHSM_SO_PIN_FILE)
[ -n "$pin" ] || { echo "create-token.sh: no PIN (set SOFTHSM_PIN or SOFTHSM_PIN_FILE)" >&2; exit 2; }
[ -n "$so_pin" ] || { echo "create-token.sh: no SO PIN (set SOFTHSM_SO_PIN or SOFTHSM_SO_PIN_FILE)" >&2; exit 2; }
command -v softhsm2-util >/dev/null || { echo "create-token.sh: softhsm2-util not found (apt-get install softhsm2)" >&2; exit 1; }

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf=$dir/softhsm2.conf
if [ ! -f "$conf" ]; then
  sed "s#@TOKENDIR@#$dir/tokens#" "$here/softhsm2.conf.template" > "$conf"
fi
export SOFTHSM2_CONF=$conf
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*$"; then
  echo "$conf"
  exit 0
fi
# softhsm2-util takes the PINs as arguments; this runs briefly, in a private umask.
softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
echo "$conf"
