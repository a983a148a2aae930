#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time, from the checked-in seed corpus
# (fuzz/corpus/<target>). The test command (scripts/test.sh) runs it briefly; for a longer hunt:
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET ...]      SECONDS per target (default 20), default every target
#   ./scripts/fuzz.sh 3600 import_rows
#
# Needs the nightly toolchain (cargo-fuzz builds with sanitizers) and cargo-fuzz, which it installs, pinned, into
# .test-tools/cargo. Inputs the fuzzer finds go to .test-tools/fuzz/corpus/<target> (never into the checked-in seeds);
# a crash is saved under .test-tools/fuzz/artifacts/<target>/ and fails the run, with the command that replays it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_FUZZ_VERSION=0.13.1
TOOLS="$ROOT/.test-tools"
export PATH="$TOOLS/cargo/bin:$PATH"
SECONDS_PER_TARGET="${1:-20}"
shift || true
die() { echo "fuzz.sh: $*" >&2; exit 1; }
[[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, got: $SECONDS_PER_TARGET"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal || die "could not install the nightly toolchain (offline?)"
fi
if ! cargo-fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into ${TOOLS#"$ROOT"/}/cargo"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS/cargo" ||
    die "could not install cargo-fuzz from crates.io"
fi

mapfile -t ALL < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tributary-fuzz$')
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then TARGETS=("${ALL[@]}"); fi
for t in "${TARGETS[@]}"; do
  printf '%s\n' "${ALL[@]}" | grep -qx "$t" || die "unknown target $t (targets: ${ALL[*]})"
done

cargo +nightly fuzz build --fuzz-dir fuzz
failed=()
for t in "${TARGETS[@]}"; do
  work="$TOOLS/fuzz/corpus/$t" artifacts="$TOOLS/fuzz/artifacts/$t/"
  mkdir -p "$work" "$artifacts"
  echo "==> $t: ${SECONDS_PER_TARGET}s from fuzz/corpus/$t"
  # The first directory receives new inputs; the seeds are read only. Bounded input size, memory and time per input.
  log="$TOOLS/fuzz/$t.log" rc=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if ((rc != 0)); then
    failed+=("$t")
    tail -40 "$log" >&2
    echo "$t FAILED (log: ${log#"$ROOT"/}); replay: cargo +nightly fuzz run --fuzz-dir fuzz $t ${artifacts#"$ROOT"/}<file>" >&2
  fi
done
if ((${#failed[@]})); then die "targets that failed: ${failed[*]}"; fi
echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET}s each, no crash"
