#!/usr/bin/env bash
# Runs each fuzz target for a fixed time, then minimises its corpus back into fuzz/corpus/.
#
#   bash fuzz/run.sh                 # every target, 300 s each
#   bash fuzz/run.sh 60 json         # one target, 60 s
#
# Needs the nightly toolchain (libFuzzer and the address sanitizer); installs cargo-fuzz from
# crates.io if it is missing. One job, one worker: it is meant to run beside other work.
# Inputs: the named seeds (fuzz/seeds/<target>/, written by `--bin seeds`, never minimised)
# and what earlier runs found (fuzz/corpus/<target>/, minimised by `cargo fuzz cmin` at the
# end of each run). A crash stops the run with status 1 and leaves its input in
# fuzz/artifacts/<target>/; once fixed, copy that input into fuzz/seeds/<target>/ under a name
# that says what it broke, so that `cargo test` replays it for good
# (crates/tollgate-proto/tests/fuzz_corpus.rs, on stable).
# FUZZ_TARGET_DIR moves the build (default: fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(protobuf json)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

target_dir=(--target-dir "${FUZZ_TARGET_DIR:-fuzz/target}")
cargo +nightly fuzz build -O -a "${target_dir[@]}"
for target in "${targets[@]}"; do
  echo "fuzzing $target for $seconds s"
  # The corpus is read, not written: what the run finds goes to a scratch directory, and
  # `cmin` keeps only what adds coverage.
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "fuzz/corpus/$target"
  cargo +nightly fuzz run -O -a "${target_dir[@]}" "$target" "$scratch" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  cp -n "$scratch"/* "fuzz/corpus/$target/" 2>/dev/null || true
  cargo +nightly fuzz cmin -O -a "${target_dir[@]}" "$target" "fuzz/corpus/$target"
  rm -rf "$scratch"
done
