#!/usr/bin/env bash
# Builds every Lambda function with cargo-lambda (as `sam build` does for infra/template.yaml), plus the
# hello-world baseline of the cold-start benchmark, and prints each binary's size and its zipped size.
#
#   ./scripts/lambda-build.sh [arm64|x86_64] [--lambda-dir DIR] [--profile NAME] [--no-baseline]
#
#   arm64 | x86_64   the Lambda architecture (default arm64, the template's default). The cold-start benchmark
#                    runs the binaries on this machine, so it needs the host's architecture (x86_64 here).
#   --lambda-dir DIR where the bootstraps go (default target/lambda: DIR/<function>/bootstrap, as cargo-lambda
#                    and the benchmark expect).
#   --profile NAME   a Cargo profile other than `release`, e.g. `lambda-ci` (no LTO: a third of the CPU time, for
#                    CI checks; see Cargo.toml). Default `--release`, what `sam build` deploys.
#   --no-baseline    only the eight functions, without crates/bench's hello-lambda.
#
# Tools: cargo-lambda and zig (PyPI `cargo-lambda`, `ziglang`, pinned in scripts/requirements-test.txt) from the
# venv that scripts/test.sh sets up (.test-tools/venv; `./scripts/test.sh --setup-only` creates it). The Rust target
# is added with rustup when it is missing. The aws-lc build switch (no CPU-jitter entropy) comes from
# .cargo/config.toml, so this build and `sam build` produce the same binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec </dev/null

VENV="$ROOT/.test-tools/venv"
# Every function of infra/template.yaml: package, binary (BuildProperties.Binary).
FUNCTIONS=(
  tributary-ingest:ingest
  tributary-stitch:stitch
  tributary-deliver:deliver
  tributary-profile-api:profile-api
  tributary-import:import
  tributary-audiences:audiences
  tributary-dsr-api:dsr-api
  tributary-dsr-worker:dsr-worker
)
BASELINE=tributary-bench:hello-lambda

die() {
  echo "lambda-build.sh: $*" >&2
  exit 1
}

ARCH=arm64 LAMBDA_DIR="$ROOT/target/lambda" PROFILE_ARGS=(--release) WITH_BASELINE=true
while (($#)); do
  case "$1" in
    arm64 | aarch64) ARCH=arm64 ;;
    x86_64 | x86-64 | amd64) ARCH=x86_64 ;;
    --lambda-dir)
      [[ $# -ge 2 ]] || die "--lambda-dir needs a directory"
      LAMBDA_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
      shift
      ;;
    --profile)
      [[ $# -ge 2 ]] || die "--profile needs a profile name"
      if [[ "$2" == release ]]; then PROFILE_ARGS=(--release); else PROFILE_ARGS=(--profile "$2"); fi
      shift
      ;;
    --no-baseline) WITH_BASELINE=false ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
  shift
done
case "$ARCH" in
  arm64) TRIPLE=aarch64-unknown-linux-gnu ARCH_FLAG=--arm64 ;;
  x86_64) TRIPLE=x86_64-unknown-linux-gnu ARCH_FLAG=--x86-64 ;;
esac

# cargo-lambda, and zig through the venv's python (cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on
# PATH).
if [[ ! -x "$VENV/bin/cargo-lambda" ]] || ! "$VENV/bin/python" -c 'import ziglang' 2>/dev/null; then
  die "cargo-lambda or ziglang is missing from $VENV: run ./scripts/test.sh --setup-only (it installs
scripts/requirements-test.txt), or $VENV/bin/pip install -r scripts/requirements-test.txt"
fi
export PATH="$VENV/bin:$PATH"

if ! rustup target list --installed | grep -qx "$TRIPLE"; then
  echo "Rust target $TRIPLE is not installed; adding it with rustup"
  rustup target add "$TRIPLE" ||
    die "could not add the Rust target $TRIPLE (offline?): run \`rustup target add $TRIPLE\` by hand"
fi

LOCKED=()
if [[ -f Cargo.lock ]]; then LOCKED=(--locked); fi
SELECT=() NAMES=()
BUILD=("${FUNCTIONS[@]}")
if $WITH_BASELINE; then BUILD+=("$BASELINE"); fi
for entry in "${BUILD[@]}"; do
  SELECT+=(-p "${entry%%:*}" --bin "${entry##*:}")
  NAMES+=("${entry##*:}")
done

echo "==> cargo lambda build ${PROFILE_ARGS[*]} $ARCH_FLAG (${#NAMES[@]} binaries) into ${LAMBDA_DIR#"$ROOT"/}"
start=$SECONDS
# One invocation for all of them: the shared dependency tree compiles once.
cargo lambda build "${PROFILE_ARGS[@]}" "$ARCH_FLAG" --lambda-dir "$LAMBDA_DIR" "${LOCKED[@]}" "${SELECT[@]}"
echo "build took $((SECONDS - start)) s"

# Sizes: the binary, and the zip Lambda receives (deflate, as `cargo lambda build --output-format zip` writes it).
"$VENV/bin/python" - "$LAMBDA_DIR" "$ARCH" "${NAMES[@]}" <<'EOF'
import io, os, sys, zipfile

lambda_dir, arch, names = sys.argv[1], sys.argv[2], sys.argv[3:]
missing = [n for n in names if not os.path.isfile(os.path.join(lambda_dir, n, "bootstrap"))]
if missing:
    sys.exit(f"lambda-build.sh: no bootstrap for {', '.join(missing)} under {lambda_dir}")
mib = lambda n: f"{n / 1048576:.2f}"
print(f"\nLambda artifacts ({arch}, {lambda_dir}):")
print(f"| {'function':<23} | {'binary MiB':>10} | {'zip MiB':>8} |")
print(f"|{'-' * 25}|{'-' * 11}:|{'-' * 9}:|")
total_bin = total_zip = 0
for name in names:
    path = os.path.join(lambda_dir, name, "bootstrap")
    size = os.path.getsize(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    zipped = buf.getbuffer().nbytes
    label = f"{name} (baseline)" if name == "hello-lambda" else name
    if name != "hello-lambda":
        total_bin += size
        total_zip += zipped
    print(f"| {label:<23} | {mib(size):>10} | {mib(zipped):>8} |")
print(f"| {'functions':<23} | {mib(total_bin):>10} | {mib(total_zip):>8} |")
EOF
