#!/usr/bin/env bash
# EST enrollments per second: `fleetward serve` on core 0 answering simpleenroll (TLS 1.3 on
# kept-alive connections, HTTP Basic with the device's factory secret checked by HMAC, CSR parse
# and signature check, issuance under the issuing CA, and a durable registry write: device
# allowed → active, certificate row, audit entry), driven by wrk on core 1 with 32 connections.
# Beside it in the same run: Debian's cfssl (`cfssl serve`, P-256 CA, /api/v1/cfssl/sign over plain
# HTTP, no authentication, no database), driven the same way. Rates are also given per core of
# server CPU (from /proc/PID/stat). Medians of 3 runs each.
# EST_KEY_STORE=softhsm keeps the issuing key in a SoftHSM2 token (init --key-store).
# Usage: [FLEETWARD_BIN=…] [EST_KEY_STORE=softhsm] bench/est.sh [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
for tool in wrk cfssl openssl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench/est.sh: needs $tool (apt-get install wrk golang-cfssl openssl)" >&2; exit 1; }
done
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-est-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)

# One CSR with an empty subject (the identity comes from the proof), base64 DER for EST, PEM for cfssl.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/" -outform DER -out "$work/csr.der" 2>/dev/null
base64 -w 64 "$work/csr.der" > "$work/csr.b64"
openssl req -inform DER -in "$work/csr.der" -out "$work/csr.pem"
python3 -c "import json,sys; print(json.dumps({'certificate_request': open(sys.argv[1]).read()}))" "$work/csr.pem" > "$work/cfssl.json"

# Enough allow-listed devices for every run: EB-<n> with secret secret-<n zero-padded to 14>.
devices=${EST_DEVICES:-400000}
python3 - "$devices" "$work/allow.csv" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("id,secret,key_sha256,model,metadata\n")
    for i in range(1, n + 1):
        f.write(f"EB-{i},secret-{i:014d},,bench,\n")
PY

# wrk prints "Requests/sec:" and, with --latency, the 99% line.
run_wrk() { # url script -> prints "rate p99_ms non2xx"
  local out
  out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$2" "$1" 2>"$work/wrk.err")
  local rate p99 bad
  rate=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/, "", v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v=v*1000}; print v}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rate ${p99:-?} ${bad:-0}"
}

# EST_KEY_STORE=softhsm: the issuing key in a SoftHSM2 token (init --key-store), one per run.
key_store=()
if [ "${EST_KEY_STORE:-}" = softhsm ]; then
  module=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so 2>/dev/null | head -1)
  [ -n "$module" ] || { echo "bench/est.sh: EST_KEY_STORE=softhsm needs softhsm2" >&2; exit 1; }
  mkdir -p "$work/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" >"$work/softhsm2.conf"
  export SOFTHSM2_CONF=$work/softhsm2.conf FLEETWARD_PKCS11_PIN=bench-pin-1234
  echo "issuing key: in SoftHSM2 tokens (init --key-store)"
fi

fw_rates=(); fw_core=(); fw_p99=(); first=1
for run in 1 2 3; do
  echo "Fleetward EST run ${run}/3…" >&2
  data="$work/data$run"
  if [ "${EST_KEY_STORE:-}" = softhsm ]; then
    softhsm2-util --init-token --free --label "est-bench-$run" --pin "$FLEETWARD_PKCS11_PIN" --so-pin bench-so-5678 >/dev/null
    key_store=(--key-store "pkcs11:token=est-bench-$run" --pkcs11-module "$module")
  fi
  "$fleetward" init --data "$data" --kdf-iterations 100000 "${key_store[@]}" >/dev/null 2>&1
  "$fleetward" devices import --data "$data" "$work/allow.csv" --json >/dev/null
  taskset -c 0 "$fleetward" serve --data "$data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --mqtt-listen off >"$work/serve$run.out" 2>"$work/serve$run.err" &
  pid=$!; bench_pids+=("$pid")
  for _ in $(seq 1 100); do grep -q '^EST listening' "$work/serve$run.out" && break; sleep 0.1; done
  url=$(grep -o 'https://[0-9.]*:[0-9]*' "$work/serve$run.out" | head -1)/.well-known/est/simpleenroll
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  read -r rate p99 bad < <(EST_CSR="$work/csr.b64" EST_FIRST=1 run_wrk "$url" bench/est.lua)
  end=$(date +%s.%N); after=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  share=$(awk -v a="$before" -v b="$after" -v s="$start" -v e="$end" -v t="$ticks_per_second" 'BEGIN {printf "%.3f", (b-a)/t/(e-s)}')
  active=$(sqlite3 "$data/registry.sqlite" "SELECT count(*) FROM devices WHERE state = 'active'" 2>/dev/null || echo "?")
  recorded=$(sqlite3 "$data/registry.sqlite" "SELECT count(*) FROM certificates" 2>/dev/null || echo "?")
  echo "  $rate enrollments/s, server CPU ${share} cores, p99 ${p99} ms, non-2xx ${bad}; registry: ${active} active, ${recorded} certificates" >&2
  fw_rates+=("$rate"); fw_p99+=("$p99")
  fw_core+=("$(awk -v r="$rate" -v s="$share" 'BEGIN {printf "%.0f", (s > 0 ? r / s : 0)}')")
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca-key.pem" -out "$work/ca.pem" -subj "/CN=cfssl bench CA" \
  -days 30 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
cf_rates=(); cf_core=(); cf_p99=()
for run in 1 2 3; do
  echo "cfssl run ${run}/3…" >&2
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  taskset -c 0 cfssl serve -ca "$work/ca.pem" -ca-key "$work/ca-key.pem" -address 127.0.0.1 -port "$port" >"$work/cfssl.log" 2>&1 &
  pid=$!; bench_pids+=("$pid")
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  read -r rate p99 bad < <(CFSSL_BODY="$work/cfssl.json" run_wrk "http://127.0.0.1:$port/api/v1/cfssl/sign" bench/cfssl.lua)
  end=$(date +%s.%N); after=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  share=$(awk -v a="$before" -v b="$after" -v s="$start" -v e="$end" -v t="$ticks_per_second" 'BEGIN {printf "%.3f", (b-a)/t/(e-s)}')
  echo "  $rate signs/s, server CPU ${share} cores, p99 ${p99} ms, non-2xx ${bad}" >&2
  cf_rates+=("$rate"); cf_p99+=("$p99")
  cf_core+=("$(awk -v r="$rate" -v s="$share" 'BEGIN {printf "%.0f", (s > 0 ? r / s : 0)}')")
done

fw_rate=$(printf '%s\n' "${fw_rates[@]}" | median); fw_per_core=$(printf '%s\n' "${fw_core[@]}" | median)
cf_rate=$(printf '%s\n' "${cf_rates[@]}" | median); cf_per_core=$(printf '%s\n' "${cf_core[@]}" | median)
echo
echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores"
echo "fleetward EST simpleenroll: median ${fw_rate}/s (runs: ${fw_rates[*]}), per core of server CPU ${fw_per_core}/s (runs: ${fw_core[*]}), p99 ms: ${fw_p99[*]}"
echo "cfssl sign:                 median ${cf_rate}/s (runs: ${cf_rates[*]}), per core of server CPU ${cf_per_core}/s (runs: ${cf_core[*]}), p99 ms: ${cf_p99[*]}"
echo "fleetward / cfssl per core: $(awk -v a="$fw_per_core" -v b="$cf_per_core" 'BEGIN {printf "%.2f", a / b}')"
