#!/usr/bin/env bash
# Tributary's one test command (README, and `.ci/run`): installs what the tests need, then runs every tier.
#
#   ./scripts/test.sh               install/refresh the tools, build once, run all tiers, print a summary
#   ./scripts/test.sh --setup-only  only install/refresh the tools (Python venv, npm packages)
#
# Tiers (DESIGN.md §4):
#   1. unit, contract and end-to-end tests (cargo nextest, every test binary but the ones below)
#      + real SDK clients (tests/tests/sdk_clients.rs: official Python and Node clients against `tributary serve`)
#      + schemathesis against `tributary serve` with the management API's /openapi.json (tests/tests/schemathesis.rs)
#   2. the AWS adapters against moto_server on loopback (tests/tests/aws.rs, feature aws-integration)
#   3. infra: cfn-lint (+ serverless rules) and checkov on infra/template.yaml, the SAM transform run offline and
#      linted too; the emulator deployment of the translated template runs in tier 2 (tests/tests/aws_stack.rs)
# then the Lambda artifacts (cargo lambda build --release, sizes) and the cold-start benchmark (ratios to a
# hello-world lambda_runtime binary),
# the fuzz targets for 20 s each (scripts/fuzz.sh: cargo-fuzz on nightly, installed into .test-tools/cargo),
# the benchmark runner on small sizes (scripts/bench.sh --debug --quick, with the cost workload on moto),
# and the hygiene checks: cargo fmt --check, cargo clippy -D warnings, doctests.
#
# Installs, idempotently (a second run only checks stamps):
#   .test-tools/venv                 Python venv with scripts/requirements-test.txt (moto, cfn-lint, SDKs,
#                                    schemathesis, cargo-lambda, zig)
#   .test-tools/checkov-venv         checkov (scripts/requirements-checkov.txt; its pins clash with moto's)
#   tests/sdk/node/node_modules      npm ci from tests/sdk/node/package-lock.json
#   Debian packages only when python3/venv or node/npm are missing (apt-get update once first).
#
# Every step runs even when an earlier one failed (except that nothing runs on a failed build); the exit code is
# non-zero if any step failed. moto_server is started on a free loopback port and always stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec </dev/null # CI has no stdin; nothing here may wait for input.

TOOLS="$ROOT/.test-tools"
VENV="$TOOLS/venv"
REQUIREMENTS="$ROOT/scripts/requirements-test.txt"
# checkov pins an older boto3 than moto runs on, so it gets a venv of its own.
CHECKOV_VENV="$TOOLS/checkov-venv"
CHECKOV_REQUIREMENTS="$ROOT/scripts/requirements-checkov.txt"
NODE_DIR="$ROOT/tests/sdk/node"
LOGS="$TOOLS/logs"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

SETUP_ONLY=false
for arg in "$@"; do
  case "$arg" in
    --setup-only) SETUP_ONLY=true ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "test.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
  echo "test.sh: $*" >&2
  exit 1
}
sha256_of() { cat "$@" | sha256sum | cut -c1-64; }

# ---------------------------------------------------------------------------------------------------------------
# Step bookkeeping: every step's outcome and duration, printed at the end.
SUMMARY=()
FAILED=0
record() { # record STATUS NAME DETAIL SECONDS
  SUMMARY+=("$(printf '%-4s  %-9s %s (%ss)' "$1" "$2" "$3" "$4")")
  if [[ "$1" != PASS ]]; then FAILED=1; fi
}

# run_step NAME DETAIL CMD... : runs CMD with its output shown and kept in $LOGS/NAME.log, records the outcome.
run_step() {
  local name="$1" detail="$2" start=$SECONDS rc=0
  shift 2
  log "$name: $*"
  "$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
  if ((rc == 0)); then
    record PASS "$name" "$detail" $((SECONDS - start))
  else
    record FAIL "$name" "$detail (exit $rc; log: ${LOGS#"$ROOT"/}/$name.log)" $((SECONDS - start))
  fi
  return "$rc"
}

# moto_start / moto_stop and MOTO_PID (shared with scripts/bench.sh).
# shellcheck source=scripts/moto.sh
source "$ROOT/scripts/moto.sh"
moto_trap

# ---------------------------------------------------------------------------------------------------------------
# Setup: system packages (only if missing), the Python venv, the npm packages.
APT_UPDATED=false
apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  if ! $APT_UPDATED; then
    apt-get update -qq
    APT_UPDATED=true
  fi
  apt-get install -y -qq --no-install-recommends "$@"
}

ensure_python() {
  if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv python3-pip
  fi
  python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version' ||
    die "python3 >= 3.9 is needed ($(python3 --version 2>&1))"
  # Debian's python3 lacks ensurepip (hence venv) until python3-venv is installed.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
}

ensure_venv() {
  local stamp="$VENV/.tributary-requirements" want
  want="$(sha256_of "$REQUIREMENTS")-$(python3 -c 'import sys; print(sys.version.split()[0])')"
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null &&
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "python venv up to date ($VENV)"
    return 0
  fi
  ensure_python
  if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --progress-bar off -r "$REQUIREMENTS"
  echo "$want" >"$stamp"
}

ensure_checkov_venv() {
  local stamp="$CHECKOV_VENV/.tributary-requirements" want
  want="$(sha256_of "$CHECKOV_REQUIREMENTS")-$(python3 -c 'import sys; print(sys.version.split()[0])')"
  if [[ -x "$CHECKOV_VENV/bin/checkov" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "checkov venv up to date ($CHECKOV_VENV)"
    return 0
  fi
  ensure_python
  if ! "$CHECKOV_VENV/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV"
  fi
  "$CHECKOV_VENV/bin/python" -m pip install --quiet --progress-bar off -r "$CHECKOV_REQUIREMENTS"
  echo "$want" >"$stamp"
}

ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  ((major >= 18)) || die "node >= 18 is needed for the SDK tests (found $(node --version))"
}

ensure_node_modules() {
  local stamp="$NODE_DIR/node_modules/.tributary-lock" want
  ensure_node
  if [[ -f "$NODE_DIR/package-lock.json" ]]; then
    want="$(sha256_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")-$(node --version)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
      echo "npm packages up to date ($NODE_DIR/node_modules)"
      return 0
    fi
    # npm ci refuses this lock when the registry lacks some of an optional dependency's platform builds (this
    # machine's registry has no darwin/win32 builds of msgpackr-extract, a dependency of rudder-sdk-node's
    # optional Redis queue), because it then cannot prove the lock complete. npm install --no-save still installs
    # exactly the locked versions and leaves the lock alone.
    if ! (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm-ci.log" 2>&1); then
      echo "npm ci refused the lock (see ${LOGS#"$ROOT"/}/npm-ci.log); installing the locked versions with npm install --no-save"
      (cd "$NODE_DIR" && npm install --no-save --no-audit --no-fund --loglevel=error)
    fi
  else
    # First install ever: resolve the pinned versions and write the lock file (commit it).
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error)
    want="$(sha256_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")-$(node --version)"
  fi
  echo "$want" >"$stamp"
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain with rustup"
  local component
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      rustup component add "$component" || die "cargo $component is missing and could not be installed"
    fi
  done
}

setup() {
  ensure_rust
  ensure_venv
  ensure_checkov_venv
  ensure_node_modules
}

mkdir -p "$LOGS"
setup_start=$SECONDS
log "setup: tools in ${TOOLS#"$ROOT"/}, ${NODE_DIR#"$ROOT"/}/node_modules"
# A subshell outside any `if`/`||`, so that `set -e` holds inside it: a failed pip/npm stops the setup before it
# writes its stamp.
set +e
(
  set -e
  setup
) 2>&1 | tee "$LOGS/setup.log"
setup_rc=${PIPESTATUS[0]}
set -e
if ((setup_rc != 0)); then
  record FAIL setup "install of the test tools failed (log: ${LOGS#"$ROOT"/}/setup.log)" $((SECONDS - setup_start))
  printf '\n%s\n' "${SUMMARY[@]}"
  exit 1
fi
record PASS setup "python venv, npm packages, cargo fmt/clippy" $((SECONDS - setup_start))
if $SETUP_ONLY; then
  printf '\n%s\n' "${SUMMARY[@]}"
  exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# moto_server on a free loopback port, for the AWS tier (tests fail, not skip, without it).
start_moto() {
  local start=$SECONDS
  if moto_start "$VENV" "$LOGS/moto.log"; then
    record PASS moto "moto_server at $AWS_ENDPOINT_URL (pid $MOTO_PID)" $((SECONDS - start))
    return 0
  fi
  record FAIL moto "moto_server did not start (log: ${LOGS#"$ROOT"/}/moto.log)" $((SECONDS - start))
  return 1
}
log "moto: starting moto_server"
start_moto || true

export TRIBUTARY_PYTHON="$VENV/bin/python"
export TRIBUTARY_NODE_MODULES="$NODE_DIR/node_modules"

# ---------------------------------------------------------------------------------------------------------------
# Tier 3 (cheap, first): the SAM template.
run_step cfn-lint "tier 3: cfn-lint + serverless rules, infra/template.yaml" \
  "$VENV/bin/cfn-lint" -a cfn_lint_serverless.rules -- infra/template.yaml || true

sam_transform() {
  # cfn-lint validates SAM resources against SAM's schemas but no longer runs the transform itself; run it offline
  # (infra/emulator.py: a fixed managed-policy map, a placeholder code location, no AWS calls) and lint the result.
  # The AWS tier deploys the same translation onto moto (tests/tests/aws_stack.rs).
  local out="$TOOLS/template.transformed.json"
  rm -f "$out"
  "$VENV/bin/python" infra/emulator.py transform "$out" || return 1
  "$VENV/bin/cfn-lint" "$out"
}
run_step sam "tier 3: SAM transform of infra/template.yaml + cfn-lint of the result" sam_transform || true

checkov_infra() {
  # Zero failures on the template as written and as CloudFormation will see it; every skip sits on its resource
  # with its reason (infra/.checkov.yaml holds none).
  "$CHECKOV_VENV/bin/checkov" --config-file infra/.checkov.yaml -d infra || return 1
  "$CHECKOV_VENV/bin/checkov" --config-file infra/.checkov.yaml -f "$TOOLS/template.transformed.json"
}
run_step checkov "tier 3: checkov on infra/ and on the transformed template" checkov_infra || true

# ---------------------------------------------------------------------------------------------------------------
# Rust: format, one build, the test tiers, doctests, clippy.
LOCKED=()
if [[ -f Cargo.lock ]]; then LOCKED=(--locked); fi

run_step fmt "cargo fmt --all -- --check" cargo fmt --all -- --check || true

BUILD_OK=true
run_step build "cargo build --workspace --all-targets --all-features" \
  cargo build --workspace --all-targets --all-features "${LOCKED[@]}" || BUILD_OK=false

TOTAL_PASSED=0 TOTAL_FAILED=0 TOTAL_SKIPPED=0
# count_results LOG: adds nextest's "Summary ... N passed, N failed ..." or libtest's "test result:" lines.
count_results() {
  local line n
  line="$(grep -E '^ *Summary \[' "$1" | tail -n 1 || true)"
  if [[ -n "$line" ]]; then
    n="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    TOTAL_PASSED=$((TOTAL_PASSED + n))
    for what in failed 'timed out'; do
      n="$(grep -oE "[0-9]+ $what" <<<"$line" | grep -oE '^[0-9]+' || echo 0)"
      TOTAL_FAILED=$((TOTAL_FAILED + n))
    done
    n="$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + n))
    return
  fi
  while read -r p f i; do
    TOTAL_PASSED=$((TOTAL_PASSED + p)) TOTAL_FAILED=$((TOTAL_FAILED + f)) TOTAL_SKIPPED=$((TOTAL_SKIPPED + i))
  done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$1")
}

AWS_BIN='tributary-tests::aws'
# Every AWS-tier binary (aws, aws_ingest, aws_stitch, …): nextest's binary_id() takes a glob.
AWS_FILTER='binary_id(tributary-tests::aws*)'
SDK_BIN='tributary-tests::sdk_clients'
API_FUZZ_BIN='tributary-tests::schemathesis'
if $BUILD_OK; then
  if cargo nextest --version >/dev/null 2>&1; then
    # One build, up to three runs split by tier so that each gets its own line below. nextest rejects a filter
    # naming a binary that does not exist, so list the binaries first; a missing tier binary is a failure.
    BINARIES="$(cargo nextest list --workspace --all-features "${LOCKED[@]}" --list-type binaries-only \
      --message-format json 2>"$LOGS/nextest-list.log" |
      "$VENV/bin/python" -c 'import json, sys; print("\n".join(json.load(sys.stdin)["rust-binaries"]))' || true)"
    has_binary() { grep -qxF "$1" <<<"$BINARIES"; }
    nextest() { cargo nextest run --workspace --all-features --no-fail-fast "${LOCKED[@]}" --no-tests=fail "$@"; }
    others=()
    if has_binary "$AWS_BIN"; then others+=("$AWS_FILTER"); fi
    if has_binary "$SDK_BIN"; then others+=("binary_id($SDK_BIN)"); fi
    if has_binary "$API_FUZZ_BIN"; then others+=("binary_id($API_FUZZ_BIN)"); fi
    tier1=()
    if ((${#others[@]})); then tier1=(-E "not ($(IFS='|'; echo "${others[*]}"))"); fi
    run_step tests "tier 1: unit, contract, end-to-end (nextest)" nextest "${tier1[@]}" || true
    count_results "$LOGS/tests.log"
    if has_binary "$SDK_BIN"; then
      run_step sdk "tier 1: official Segment/RudderStack SDK clients vs tributary serve" \
        nextest -E "binary_id($SDK_BIN)" || true
      count_results "$LOGS/sdk.log"
    else
      record FAIL sdk "no test binary $SDK_BIN (tests/Cargo.toml [[test]] sdk_clients)" 0
    fi
    if has_binary "$API_FUZZ_BIN"; then
      run_step schemathesis "tier 1: schemathesis vs tributary serve, with the management API's /openapi.json" \
        nextest -E "binary_id($API_FUZZ_BIN)" --no-capture || true
      count_results "$LOGS/schemathesis.log"
    else
      record FAIL schemathesis "no test binary $API_FUZZ_BIN (tests/Cargo.toml [[test]] schemathesis)" 0
    fi
    if ! has_binary "$AWS_BIN"; then
      record FAIL aws "tier 2: no test binary $AWS_BIN (tests/Cargo.toml [[test]] aws)" 0
    elif [[ -z "$MOTO_PID" ]]; then
      record FAIL aws "tier 2: not run, moto_server did not start" 0
    else
      run_step aws "tier 2: AWS adapters on moto_server" nextest -E "$AWS_FILTER" || true
      count_results "$LOGS/aws.log"
    fi
  else
    echo "cargo-nextest not found: falling back to cargo test" >&2
    run_step tests "tiers 1+2: cargo test (cargo-nextest missing)" \
      cargo test --workspace --all-features --no-fail-fast "${LOCKED[@]}" || true
    count_results "$LOGS/tests.log"
  fi
  run_step doctest "cargo test --doc" cargo test --doc --workspace --all-features "${LOCKED[@]}" || true
  count_results "$LOGS/doctest.log"
  run_step clippy "cargo clippy --all-targets --all-features -D warnings" \
    cargo clippy --workspace --all-targets --all-features "${LOCKED[@]}" -- -D warnings || true
  # Fuzzing (issue 9): each cargo-fuzz target for a bounded time from the checked-in seeds (scripts/fuzz.sh; a
  # longer hunt is `./scripts/fuzz.sh SECONDS [TARGET ...]`).
  run_step fuzz "cargo fuzz: ingest body, import rows, workspace config, OpenDSR request (20 s each)" \
    bash scripts/fuzz.sh 20 || true
  # Lambda artifacts: every function (and the hello-world baseline) built by cargo-lambda as `sam build` builds
  # them, sizes printed; x86_64 because the cold-start benchmark runs them on this machine. Then each function's init
  # next to the baseline's on a local Runtime API (ratios printed, not asserted: a benchmark, not a timed test):
  # offline first (the workspace file from disk, AWS calls refused: the binaries' own init), then against the moto
  # server (adds the emulator's answers to the config read and the connection warm-up).
  LAMBDA_OK=true
  run_step lambda "cargo lambda build --release (8 functions + baseline), sizes" \
    bash scripts/lambda-build.sh x86_64 || LAMBDA_OK=false
  if ! $LAMBDA_OK; then
    record SKIP cold-start "not run: the Lambda build failed" 0
  elif [[ -z "$MOTO_PID" ]]; then
    record FAIL cold-start "not run: moto_server did not start" 0
  else
    run_step cold-start "cold start of each function vs hello-world lambda_runtime (ratios)" \
      bash -c 'target/debug/cold-start --lambda-dir target/lambda --offline --runs 20 &&
        target/debug/cold-start --lambda-dir target/lambda --runs 10' || true
  fi
  # The benchmark runner end to end on small sizes with the debug binaries built above (figures not meaningful):
  # every benchmark, bench-cost's deployment of the stack on moto with its workload, and the table.
  run_step bench "scripts/bench.sh --debug --quick: every benchmark and the cost workload, one table" \
    bash scripts/bench.sh --debug --quick || true
else
  for step in tests sdk schemathesis aws doctest clippy fuzz lambda cold-start bench; do
    record SKIP "$step" "not run: the build failed" 0
  done
fi

# ---------------------------------------------------------------------------------------------------------------
printf '\n\033[1m==> summary\033[0m\n'
printf '%s\n' "${SUMMARY[@]}"
if ((FAILED)); then echo "RESULT: FAILED"; else echo "RESULT: all steps passed"; fi
echo "tests: $TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
exit "$FAILED"
