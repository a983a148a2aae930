#!/usr/bin/env bash
# Tributary's benchmark runner: builds once, runs every benchmark (each measures its baseline in the same run, on the
# same input) and prints one table of their figures and ratios with the targets met or missed
# (`tributary bench table`). README.md, "Benchmarks", says what each one compares.
#
#   bash scripts/bench.sh [--quick] [--lambda] [--debug]
#
#   (no option)  release build, every benchmark at its default sizes
#   --quick      small sizes and few rounds, so that a run takes a minute or two once built: to try the runner, not
#                for figures to quote
#   --lambda     build the Lambda bootstraps first (scripts/lambda-build.sh for this host's architecture), so that
#                the cold-start benchmark runs too
#   --debug      debug builds instead of release: a smoke check of the runner (the figures mean nothing)
#
# Benchmarks, each one's output kept in .test-tools/bench/<name>.txt:
#   ingest, governance, deliver, import, audiences   `tributary bench <name>` (crates/cli)
#   import-memory  `tributary bench import --rounds 0 --memory-mb N`: peak resident memory, in a process of its own
#   stitch         bench-stitch (tests/): the embedded store vs the reference model; DynamoDB dollars on moto
#   cost           bench-cost (tests/): the SAM stack on moto, dollars per million events
#   cold-start     each Lambda bootstrap's init vs the hello-lambda baseline's, offline; only when
#                  <target dir>/lambda/*/bootstrap exist (built by --lambda, or by scripts/lambda-build.sh)
# The table is printed and kept in .test-tools/bench/table.txt. Missed targets are reported, not failures: the exit
# code is non-zero only when the build or a benchmark failed (the table then leaves that benchmark out).
#
# Needs moto_server from the venv that `bash scripts/test.sh --setup-only` creates (.test-tools/venv; TRIBUTARY_VENV
# names another), started on a free loopback port for the run and stopped on exit. Honours CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec </dev/null

VENV="${TRIBUTARY_VENV:-$ROOT/.test-tools/venv}"
OUT="$ROOT/.test-tools/bench"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LAMBDA_DIR="$TARGET_DIR/lambda"

die() {
  echo "bench.sh: $*" >&2
  exit 1
}
log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

QUICK=false LAMBDA=false PROFILE=release
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=true ;;
    --lambda) LAMBDA=true ;;
    --debug) PROFILE=debug ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

[[ -x "$VENV/bin/moto_server" ]] ||
  die "no moto_server in $VENV: create the venv with \`bash scripts/test.sh --setup-only\` (or set TRIBUTARY_VENV)"

# moto_start / moto_stop (shared with scripts/test.sh).
# shellcheck source=scripts/moto.sh
source "$ROOT/scripts/moto.sh"
moto_trap

if $LAMBDA; then
  case "$(uname -m)" in
    x86_64) arch=x86_64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "no Lambda architecture for this $(uname -m) host" ;;
  esac
  # The cold-start benchmark runs the bootstraps here, so they are built for this host.
  log "lambda: bash scripts/lambda-build.sh $arch --lambda-dir $LAMBDA_DIR"
  bash scripts/lambda-build.sh "$arch" --lambda-dir "$LAMBDA_DIR"
fi
COLD_START=false
if compgen -G "$LAMBDA_DIR/*/bootstrap" >/dev/null; then COLD_START=true; fi

# ---------------------------------------------------------------------------------------------------------------
# One build of every binary the run needs.
PROFILE_ARGS=()
if [[ "$PROFILE" == release ]]; then PROFILE_ARGS=(--release); fi
LOCKED=()
if [[ -f Cargo.lock ]]; then LOCKED=(--locked); fi
if [[ "$PROFILE" == release ]]; then
  SELECT=(-p tributary-cli --bin tributary -p tributary-tests --bin bench-stitch --bin bench-cost
    --features tributary-tests/aws-integration)
  if $COLD_START; then SELECT+=(-p tributary-bench --bin cold-start); fi
else
  # Debug: the binaries of the test command's own build (`--workspace --all-features`), so that after it this
  # builds nothing.
  SELECT=(--workspace --all-features --bins)
fi
log "build: cargo build ${PROFILE_ARGS[*]} ${SELECT[*]}"
cargo build "${PROFILE_ARGS[@]}" "${LOCKED[@]}" "${SELECT[@]}"
BIN="$TARGET_DIR/$PROFILE"

log "moto: starting moto_server"
mkdir -p "$OUT"
moto_start "$VENV" "$OUT/moto.log" || die "moto_server did not start (log: ${OUT#"$ROOT"/}/moto.log)"
echo "moto_server at $AWS_ENDPOINT_URL (pid $MOTO_PID)"
# bench-cost deploys the SAM template on moto with infra/emulator.py, on the venv's Python.
export TRIBUTARY_PYTHON="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------------------------
# The benchmarks. Only this run's outputs go into the table: older ones are removed first.
rm -f "$OUT"/*.txt
RESULTS=() FAILED=()
# run_bench NAME CMD...: runs CMD with its output shown and kept in $OUT/NAME.txt.
run_bench() {
  local name="$1" start=$SECONDS
  shift
  log "$name: ${*#"$ROOT"/}"
  if "$@" 2>&1 | tee "$OUT/$name.txt"; then
    RESULTS+=("$OUT/$name.txt")
    echo "($name: $((SECONDS - start)) s)"
  else
    FAILED+=("$name")
    echo "bench.sh: $name failed (output: ${OUT#"$ROOT"/}/$name.txt)" >&2
  fi
}

# Sizes: each benchmark's defaults, or with --quick a small fraction of them.
size() { if $QUICK; then echo "$2"; else echo "$1"; fi; }
# shellcheck disable=SC2046 # `size` prints words meant to be split into arguments.
{
  run_bench ingest "$BIN/tributary" bench ingest $(size "" "--rounds 3 --round-ms 100")
  run_bench governance "$BIN/tributary" bench governance $(size "" "--rounds 3 --round-ms 100")
  run_bench deliver "$BIN/tributary" bench deliver $(size "" "--events 1000 --rounds 3")
  run_bench import "$BIN/tributary" bench import $(size "" "--rows 20000 --rounds 3")
  # In a process of its own, so that nothing else raised the peak (as the README measures it).
  run_bench import-memory "$BIN/tributary" bench import --rounds 0 --memory-mb $(size 1024 16)
  run_bench audiences "$BIN/tributary" bench audiences $(size "" "--profiles 2000 --rounds 3")
  run_bench stitch "$BIN/bench-stitch" $(size "" "--people 50 --dynamodb-people 5")
  run_bench cost "$BIN/bench-cost" $(size "" --quick)
  if $COLD_START; then
    # Offline (the workspace file from disk, AWS calls refused): the functions' own init, which the target is on.
    run_bench cold-start "$BIN/cold-start" --lambda-dir "$LAMBDA_DIR" --work-dir "$TARGET_DIR/cold-start" \
      --offline $(size "" "--runs 3 --warmup 1")
  fi
}
if ! $COLD_START; then
  echo
  echo "cold-start: not run, no bootstraps in ${LAMBDA_DIR#"$ROOT"/}; add --lambda to build them first"
fi

# ---------------------------------------------------------------------------------------------------------------
((${#RESULTS[@]})) || die "every benchmark failed: ${FAILED[*]}"
log "table: $BIN/tributary bench table (${#RESULTS[@]} outputs)"
"$BIN/tributary" bench table "${RESULTS[@]}" | tee "$OUT/table.txt"
echo "(kept in ${OUT#"$ROOT"/}/table.txt; each benchmark's output beside it)"
if ((${#FAILED[@]})); then
  die "failed, left out of the table: ${FAILED[*]}"
fi
