# shellcheck shell=bash
# moto_server on a free loopback port, for the scripts that need AWS on this machine (scripts/test.sh for the AWS
# tier, scripts/bench.sh for the DynamoDB figures). Sourced, not run:
#
#   source scripts/moto.sh
#   moto_start VENV LOG   starts VENV/bin/moto_server (up to 3 ports), sets MOTO_PID, exports AWS_ENDPOINT_URL,
#                         dummy credentials and the region; returns 1 if it never came up (the log's tail on stderr)
#   moto_stop             stops it (TERM, KILL after 5 s); does nothing when none runs
#   moto_trap             stops it whenever the script exits (EXIT trap; INT and TERM exit 130 and 143), keeping
#                         the script's exit code

MOTO_PID=""

moto_start() {
  local venv="$1" log="$2" port attempt
  for attempt in 1 2 3; do
    port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    MOTO_PID=$!
    # Up when it answers anything over HTTP; give up early if the process died (e.g. the port was taken).
    if "$venv/bin/python" - "$port" "$MOTO_PID" <<'EOF'; then
import os, sys, time, urllib.request, urllib.error
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
      export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
      export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
      export AWS_EC2_METADATA_DISABLED=true
      unset AWS_PROFILE AWS_SESSION_TOKEN
      return 0
    fi
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    MOTO_PID=""
    echo "moto_server did not come up on port $port (attempt $attempt); log:" >&2
    tail -n 20 "$log" >&2 || true
  done
  return 1
}

moto_stop() {
  if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MOTO_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  MOTO_PID=""
}

# shellcheck disable=SC2329 # run by the EXIT trap
moto_cleanup() {
  local rc=$?
  moto_stop
  exit "$rc"
}

moto_trap() {
  trap moto_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
