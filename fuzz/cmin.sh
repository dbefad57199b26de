#!/usr/bin/env bash
# Minimizes the corpus of each TARGET (default: all) to keep in git: a libFuzzer merge that
# keeps the fewest, smallest inputs covering the same edges (hit counts ignored), with
# inputs cut at 2 KiB. Run after fuzz/run.sh, which builds the binaries.
#   fuzz/cmin.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
bin="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
for target in "${targets[@]}"; do
  out=$(mktemp -d)
  nice -n 15 "$bin/$target" -merge=1 -use_counters=0 -max_len=2048 "$out" "corpus/$target" 2>&1 | tail -1
  rm -rf "corpus/$target"
  mv "$out" "corpus/$target"
  chmod 755 "corpus/$target"
  echo "$target: $(ls "corpus/$target" | wc -l) inputs, $(du -sh --apparent-size "corpus/$target" | cut -f1)"
done
