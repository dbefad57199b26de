#!/usr/bin/env bash
# Creates <repo>/.venv with the Python packages the interop tests use.
# Idempotent and quick when already set up: pip runs only when the stamp file in .venv does
# not match the hash of requirements.txt (and the interpreter). Prints one line on success.
#
# Ways to get a venv with the packages, tried in order until one works (each failure is
# printed, so a CI log says why):
#   1. `python3 -m venv` (pip bootstrapped by ensurepip inside the venv);
#   2. `python3 -m venv --without-pip`, packages installed by the interpreter's own pip
#      (`pip --python .venv/bin/python`), for interpreters whose ensurepip is missing or broken;
#   3. the same two with Debian's /usr/bin/python3 after `apt-get install python3-venv
#      python3-pip`.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/../.."

req=tests/interop/requirements.txt
venv=.venv
stamp=$venv/.interop-requirements.sha256
# pip and ensurepip need a writable temporary directory; use one in the repo if the usual one
# is not.
tmp=${TMPDIR:-/tmp}
if ! { [ -d "$tmp" ] && [ -w "$tmp" ]; }; then
  export TMPDIR="$PWD/target/tmp"
  mkdir -p "$TMPDIR"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Serialize concurrent runs (parallel test binaries) when flock exists.
if command -v flock >/dev/null 2>&1 && [ -z "${HOPTRACE_INTEROP_LOCKED:-}" ]; then
  mkdir -p "$venv"
  export HOPTRACE_INTEROP_LOCKED=1
  exec flock "$venv/.setup.lock" bash "$self" "$@"
fi

say() { echo "setup.sh: $*" >&2; }

# Empties .venv but keeps the lock file other runs wait on.
clear_venv() {
  find "$venv" -mindepth 1 -maxdepth 1 ! -name .setup.lock -exec rm -rf {} + 2>/dev/null || true
}

# Runs a command quietly; on failure prints what it said.
try() {
  if "$@" >"$log" 2>&1; then
    return 0
  fi
  say "failed: $*"
  sed 's/^/    /' "$log" >&2
  return 1
}

# pip for the venv, as a command prefix; set by make_venv.
pip=()

make_venv() {
  local py=$1
  command -v "$py" >/dev/null 2>&1 || { say "$py not found"; return 1; }
  clear_venv
  if try "$py" -m venv "$venv" && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    pip=("$venv/bin/python" -m pip)
    return 0
  fi
  clear_venv
  if try "$py" -m venv --without-pip "$venv" && try "$py" -m pip --version; then
    pip=("$py" -m pip --python "$venv/bin/python")
    return 0
  fi
  return 1
}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  pip=("$venv/bin/python" -m pip)
elif [ -x "$venv/bin/python" ] && from=$(cat "$venv/.pip-from" 2>/dev/null) \
  && "$from" -m pip --version >/dev/null 2>&1; then
  pip=("$from" -m pip --python "$venv/bin/python")
else
  python=${PYTHON:-python3}
  if ! make_venv "$python"; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing python3-venv and python3-pip with apt-get"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv python3-pip >&2
    make_venv "$python" || make_venv /usr/bin/python3 || {
      say "no way to make a Python venv worked (see above)"
      exit 1
    }
  fi
  if [ "${pip[0]}" != "$venv/bin/python" ]; then
    echo "${pip[0]}" > "$venv/.pip-from"
  fi
fi

want=$( (cat "$req"; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -f "$stamp"
  try "${pip[@]}" install -q --disable-pip-version-check -r "$req" || exit 1
  echo "$want" > "$stamp"
  echo "interop venv ready: $venv (installed from $req)"
else
  echo "interop venv ready: $venv (up to date)"
fi
