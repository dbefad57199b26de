#!/usr/bin/env bash
# Sets up what the tests need and runs the whole test suite.
# Works on a fresh Debian machine with only the Rust toolchain (run as root, or with sudo
# available, when packages are missing).
set -euo pipefail
cd "$(dirname "$0")"

# The tests drive real peers: python3 (its urllib is an unmodified HTTP_PROXY client);
# tests/integration/deploy.rs runs `systemd-analyze verify` on deploy/systemd/hoptrace.service.
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# The Python peers (OpenTelemetry SDK, prometheus_client) in <repo>/.venv; the tests call this
# again (a no-op when up to date), but running it here puts any setup failure first in the log.
bash tests/interop/setup.sh

# No incremental cache: a clean build (CI) never reuses it, and it is a third of target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --all-targets --no-fail-fast "$@"
