#!/usr/bin/env bash
# Runs the Python client's tests against the real daemon: builds the
# `axion-push` binary if needed, installs the package and the test tools into
# a virtualenv under the cargo target directory, and runs pytest.
#   AXION_PUSH_BIN=/path/to/axion-push  use that binary instead of building
#   PYTHON=python3.11                   the interpreter for the virtualenv
# Extra arguments go to pytest (e.g. -k group -x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/python-client-venv"

if [ -z "${AXION_PUSH_BIN:-}" ]; then
  (cd "$repo" && cargo build --bin axion-push)
  export AXION_PUSH_BIN="$target/debug/axion-push"
fi
[ -x "$AXION_PUSH_BIN" ] || { echo "no axion-push binary at $AXION_PUSH_BIN" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[test]"

cd "$here"
exec "$venv/bin/python" -m pytest -q "$@"
