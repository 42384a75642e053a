#!/usr/bin/env bash
# Runs the browser tests: Firefox ESR end to end through a loopback push
# service, and the service worker in Chromium. Installs what they need:
# Debian's firefox-esr and chromium (as root), and the npm packages in
# package-lock.json; builds the `axion-push` binary if needed.
#   AXION_PUSH_BIN=/path/to/axion-push  use that binary instead of building
#   FIREFOX_BIN, CHROMIUM_BIN           other browser binaries
#   KEEP_TEST_DIR=1                     keep each test's directory (daemon log)
#   AXION_PUSH_TEST_MARIADB=mysql://…   the MariaDB server of the migration test
#                                       [mysql://root@127.0.0.1:3306]
# Extra arguments go to `node --test` (e.g. test/firefox.test.js).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

missing=()
[ -x "${FIREFOX_BIN:-/usr/bin/firefox-esr}" ] || missing+=(firefox-esr)
[ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -z "${AXION_PUSH_BIN:-}" ]; then
  (cd "$repo" && cargo build --bin axion-push)
  export AXION_PUSH_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/axion-push"
fi
[ -x "$AXION_PUSH_BIN" ] || { echo "no axion-push binary at $AXION_PUSH_BIN" >&2; exit 1; }

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
if [ $# -eq 0 ]; then set -- test/*.test.js; fi
exec node --test --test-concurrency=1 --test-timeout=180000 "$@"
