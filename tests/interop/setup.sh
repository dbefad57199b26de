#!/usr/bin/env bash
# Creates <repo>/.venv with the Python OpenTelemetry packages the interop tests use.
# Idempotent and quick when already set up: pip runs only when the stamp file in .venv does
# not match the hash of requirements.txt (and the interpreter). Prints one line on success.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/../.."

req=tests/interop/requirements.txt
venv=.venv
stamp=$venv/.interop-requirements.sha256

# Serialize concurrent runs (parallel test binaries) when flock exists.
if command -v flock >/dev/null 2>&1 && [ -z "${HOPTRACE_INTEROP_LOCKED:-}" ]; then
  mkdir -p "$venv"
  export HOPTRACE_INTEROP_LOCKED=1
  exec flock "$venv/.setup.lock" bash "$self" "$@"
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || { echo "setup.sh: $python not found" >&2; exit 1; }

make_venv() {
  "$python" -m venv "$venv" >/dev/null 2>&1
}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  # Keep the lock file; drop a half-made venv.
  find "$venv" -mindepth 1 -maxdepth 1 ! -name .setup.lock -exec rm -rf {} + 2>/dev/null || true
  if ! make_venv; then
    # Debian ships venv/ensurepip separately.
    find "$venv" -mindepth 1 -maxdepth 1 ! -name .setup.lock -exec rm -rf {} + 2>/dev/null || true
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup.sh: installing python3-venv with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
    make_venv || { echo "setup.sh: python3 -m venv failed" >&2; "$python" -m venv "$venv"; exit 1; }
  fi
fi

want=$( (cat "$req"; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -f "$stamp"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
  echo "interop venv ready: $venv (installed from $req)"
else
  echo "interop venv ready: $venv (up to date)"
fi
