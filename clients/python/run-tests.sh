#!/usr/bin/env bash
# Runs the Python client's tests against the real daemon, once with each
# paho-mqtt line Axion installations have: 1.6.x (Axion's ObjMqtt was
# written for it) and 2.x. Builds the `axion-push` binary if needed,
# installs the package and the test tools into one virtualenv per paho-mqtt
# line under the cargo target directory, and runs pytest in each.
#   AXION_PUSH_BIN=/path/to/axion-push  use that binary instead of building
#   PYTHON=python3.11                   the interpreter for the virtualenvs
#   AXION_PUSH_PAHO="2"                 only these paho-mqtt lines (1.6, 2)
#   AXION_PUSH_TEST_MARIADB=mysql://…   the MariaDB server of the migration test
#                                       [mysql://root@127.0.0.1:3306]; it fails without one
# Extra arguments go to pytest (e.g. -k group -x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

if [ -z "${AXION_PUSH_BIN:-}" ]; then
  (cd "$repo" && cargo build --bin axion-push)
  export AXION_PUSH_BIN="$target/debug/axion-push"
fi
[ -x "$AXION_PUSH_BIN" ] || { echo "no axion-push binary at $AXION_PUSH_BIN" >&2; exit 1; }

cd "$here"
failed=()
for paho in ${AXION_PUSH_PAHO:-1.6 2}; do
  case "$paho" in
    1.6) requirement="paho-mqtt>=1.6,<2" ;;
    2) requirement="paho-mqtt>=2,<3" ;;
    *) echo "AXION_PUSH_PAHO: unknown paho-mqtt line $paho (1.6 or 2)" >&2; exit 2 ;;
  esac
  venv="$target/python-client-venv-paho-$paho"
  if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[test]" "$requirement"
  echo "--- pytest with $requirement"
  # The tests check that this line is the one installed.
  AXION_PUSH_EXPECT_PAHO="$paho" "$venv/bin/python" -m pytest -q "$@" || failed+=("$paho")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "the client's tests failed with paho-mqtt ${failed[*]}" >&2
  exit 1
fi
