#!/usr/bin/env bash
# Gateway handshakes: full mutual-TLS 1.3 handshakes per second, and resumed ones (TLS 1.3
# tickets), of `fleetward serve`'s gateway with its registry and revocation checks on, beside
# Debian's nginx (OpenSSL 3) configured for mTLS with the same server certificate, key and client
# CAs. Four loads, one connection at a time from core 1, both servers pinned to core 0:
#   full handshakes             openssl s_time -new, no request (bare handshakes)
#   resumed handshakes          bench/tls_load.c bare-reuse: each connection resumes the session
#                               of a first whoami connection and closes once the handshake is done
#   full handshakes + whoami    bench/tls_load.c: a handshake and one GET /v1/whoami per connection
#   resumed handshakes + whoami the same, offering the last session ticket the server sent
#                               (s_time -reuse does not resume TLS 1.3 sessions)
#   kept-alive whoami           bench/tls_load.c kept-alive: 8 connections at once, each sending
#                               GET /v1/whoami again and again, one answer at a time
# An OpenSSL client spends more per handshake than either server, so the servers are not
# saturated: compare the rates per core of server CPU (from /proc/PID/stat).
# Runs twice: the default hierarchy (P-384 root) and an all-P-256 one (`init --root-key P-256`).
# Medians of 3 runs each. REVOKED=N first records N revoked certificates (of another device) in
# the registry and gives nginx the resulting CRLs (`ssl_crl`), for the rate with a long CRL.
# Needs cc and libssl-dev for bench/tls_load.c.
# Usage: [FLEETWARD_BIN=…] [REVOKED=100000] bench/gateway.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
revoked=${REVOKED:-0}
for tool in openssl curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench/gateway.sh: needs $tool" >&2; exit 1; }
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "bench/gateway.sh: needs nginx (apt-get install nginx)" >&2; exit 1; }
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-gateway-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
tls_load=$work/tls_load
cc -O2 -o "$tls_load" bench/tls_load.c -lssl -lcrypto || { echo "bench/gateway.sh: needs cc and libssl-dev" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One measured run against a server process: prints "rate cpu_share per_core". Mode "new" is
# openssl s_time (bare full handshakes); "full" and "resumed" are bench/tls_load.c (a handshake and
# one GET /v1/whoami per connection; "resumed" offers the last session ticket each time, and the
# run fails unless nearly every connection was resumed); "bare-resumed" is bench/tls_load.c
# bare-reuse (resumed handshakes without a request).
measure() { # pid port mode(new|full|resumed) dir
  local pid=$1 port=$2 mode=$3 dir=$4 before after start end out count resumed load_mode
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  if [ "$mode" = kept-alive ]; then
    # 8 kept-alive connections at once, each asking GET /v1/whoami one request after another.
    count=0
    for i in $(seq 1 8); do
      taskset -c 1 "$tls_load" 127.0.0.1 "$port" "$dir/dev.pem" "$dir/dev.key" "$dir/data/ca/root.pem" /v1/whoami "$seconds" \
        kept-alive >"$work/kept-alive.$i" 2>&1 &
    done
    wait $(jobs -p | tail -8) 2>/dev/null || true
    for i in $(seq 1 8); do read -r answers _ <"$work/kept-alive.$i" || answers=0; count=$((count + ${answers:-0})); done
    [ "$count" -gt 0 ] || count=""
    out=$(cat "$work"/kept-alive.*)
  elif [ "$mode" = new ]; then
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -cert "$dir/dev.pem" -key "$dir/dev.key" \
      -CAfile "$dir/data/ca/root.pem" -time "$seconds" 2>&1 || true)
    # "N connections in T real seconds, …" (T is whole seconds): the rate uses our own clock.
    count=$(awk '/connections in .* real seconds/ {print $1; exit}' <<<"$out")
  else
    case $mode in resumed) load_mode=reuse ;; bare-resumed) load_mode=bare-reuse ;; *) load_mode=new ;; esac
    out=$(taskset -c 1 "$tls_load" 127.0.0.1 "$port" "$dir/dev.pem" "$dir/dev.key" "$dir/data/ca/root.pem" /v1/whoami "$seconds" \
      "$load_mode" 2>&1 || true)
    read -r count resumed _ <<<"$out" || true
    if [ "$mode" != full ] && [ -n "${count:-}" ] && [ "$((resumed * 100))" -lt "$((count * 99))" ]; then
      echo "only $resumed of $count connections resumed" >&2; count=""
    fi
  fi
  end=$(date +%s.%N); after=$(cpu_ticks "$pid")
  if [ -z "${count:-}" ]; then echo "load failed: $out" >&2; echo "0 0 0"; return; fi
  awk -v c="$count" -v a="$before" -v b="$after" -v t0="$start" -v t1="$end" -v tk="$ticks_per_second" \
    'BEGIN {rate = c / (t1 - t0); share = (b - a) / tk / (t1 - t0); printf "%.0f %.3f %.0f\n", rate, share, (share > 0 ? rate / share : 0)}'
}

report() { # label rates... (triples "rate share per_core")
  local label=$1; shift
  local rates=() shares=() cores=()
  while [ $# -gt 0 ]; do rates+=("$1"); shares+=("$2"); cores+=("$3"); shift 3; done
  local rate core
  rate=$(printf '%s\n' "${rates[@]}" | median); core=$(printf '%s\n' "${cores[@]}" | median)
  printf '%-44s median %6s/s, server CPU %s cores, per server core %6s/s (runs: %s)\n' "$label" "$rate" \
    "$(printf '%s\n' "${shares[@]}" | median)" "$core" "${cores[*]}"
  echo "$core" >"$work/last-per-core"
}

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores"
for hierarchy in default all-P-256; do
  dir="$work/$hierarchy"; mkdir -p "$dir"
  extra=(); [ "$hierarchy" = all-P-256 ] && extra=(--root-key P-256)
  "$fleetward" init --data "$dir/data" --kdf-iterations 100000 "${extra[@]}" >/dev/null 2>&1
  printf 'id,secret,key_sha256,model,metadata\nbench-1,bench-secret-0000000001,,bench,\n' >"$dir/allow.csv"
  "$fleetward" devices import --data "$dir/data" "$dir/allow.csv" --json >/dev/null
  if [ "$revoked" -gt 0 ]; then
    # REVOKED revoked certificates of another device, written straight into the registry (a bench
    # shortcut: they never went through the CA), so the CRL lists them all.
    printf 'id,secret,key_sha256,model,metadata\nbench-revoked,bench-secret-0000000002,,bench,\n' >"$dir/revoked.csv"
    "$fleetward" devices import --data "$dir/data" "$dir/revoked.csv" --json >/dev/null
    sqlite3 "$dir/data/registry.sqlite" "
      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $revoked)
      INSERT INTO certificates (serial, device_id, profile, owner, not_before, not_after, sha256, issued_at)
        SELECT printf('7f%038x', i), 'bench-revoked', 'device', NULL, 0, 4102444800000, printf('%064x', i), 0 FROM n;
      INSERT INTO revocations (serial, reason, revoked_at) SELECT serial, 1, 0 FROM certificates WHERE device_id = 'bench-revoked';"
  fi
  taskset -c 0 "$fleetward" serve --data "$dir/data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --mqtt-listen off \
    >"$dir/serve.out" 2>"$dir/serve.err" &
  fw=$!; bench_pids+=("$fw")
  for _ in $(seq 1 100); do [ "$(grep -c ' listening on ' "$dir/serve.out")" -ge 3 ] && break; sleep 0.1; done
  est=$(grep '^EST listening' "$dir/serve.out" | grep -o 'https://[0-9.]*:[0-9]*')
  fw_port=$(grep '^gateway listening' "$dir/serve.out" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
  crl_directive=""
  if [ "$revoked" -gt 0 ]; then
    api=$(grep '^management API listening' "$dir/serve.out" | grep -o 'http://[0-9.]*:[0-9]*' | head -1)
    for ca in root issuing; do curl -s "$api/crl/$ca.crl" | openssl crl -inform DER -outform PEM >>"$dir/crls.pem"; done
    echo "CRL of the issuing CA: $(curl -s "$api/crl/issuing.crl" | wc -c) bytes, $(curl -s "$api/crl/issuing.crl" | openssl crl -inform DER -noout -text | grep -c 'Serial Number') entries" >&2
    crl_directive="ssl_crl $dir/crls.pem;"
  fi
  bench_enroll "$dir" "$est" bench-1 bench-secret-0000000001

  # nginx with the same server certificate (its key decrypted into the bench's temp dir) and CAs.
  ng_port=$(free_port)
  bench_nginx_mtls "$dir" "$ng_port" "ssl_session_tickets on;
        $crl_directive
        location /v1/whoami { return 200 '{\"device\":\"bench-1\"}'; }"
  taskset -c 0 "$nginx" -c "$dir/nginx.conf" -p "$dir/nginx" &
  ng=$!; bench_pids+=("$ng")
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ng_port/" && break; sleep 0.05; done

  for mode in new bare-resumed full resumed kept-alive; do
    fw_runs=(); ng_runs=()
    for run in 1 2 3; do
      echo "$hierarchy, $mode, run $run/3…" >&2
      read -r -a result < <(measure "$fw" "$fw_port" "$mode" "$dir"); fw_runs+=("${result[@]}")
      read -r -a result < <(measure "$ng" "$ng_port" "$mode" "$dir"); ng_runs+=("${result[@]}")
    done
    case $mode in
      new) what="full handshakes" ;;
      bare-resumed) what="resumed handshakes" ;;
      full) what="full handshakes + whoami" ;;
      resumed) what="resumed handshakes + whoami" ;;
      kept-alive) what="kept-alive whoami, 8 connections" ;;
    esac
    report "fleetward gateway, $hierarchy, $what:" "${fw_runs[@]}"; fw_core=$(cat "$work/last-per-core")
    report "nginx mTLS, $hierarchy, $what:" "${ng_runs[@]}"; ng_core=$(cat "$work/last-per-core")
    echo "fleetward / nginx per server core: $(awk -v a="$fw_core" -v b="$ng_core" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
  done
  kill -9 "$fw" "$ng" 2>/dev/null || true
  wait "$fw" "$ng" 2>/dev/null || true
done
