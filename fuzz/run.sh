#!/usr/bin/env bash
# Builds every fuzz target, then runs each for SECONDS (default 600) one after the other on
# its corpus, at low priority. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks the nightly flags it uses.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# No sanitizer: the code under test is safe Rust; panics and timeouts are what we look for.
cargo fuzz build --sanitizer none
bin="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== $target: ${seconds}s"
  # -timeout: any single input taking over 2 s is reported as a hang (a non-linear path).
  nice -n 15 "$bin/$target" "corpus/$target" -max_total_time="$seconds" -max_len=8192 \
    -timeout=2 -artifact_prefix="artifacts/$target/" -print_final_stats=1
done
