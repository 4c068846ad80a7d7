#!/usr/bin/env bash
# MQTT at the front door: `fleetward serve`'s MQTT listener (mutual TLS 1.3, the gateway's
# checks, the device's policy) forwarding to the mosquitto it supervises on a unix socket,
# beside Debian's mosquitto serving TLS 1.3 itself with `require_certificate true` and
# `use_identity_as_username true` (the same server certificate, key and client CAs). Loads, from
# core 1 with bench/mqtt_load.c (every CONNACK and PUBACK checked), both servers on core 0:
#   connects   one at a time: full handshake with the device certificate + CONNECT → CONNACK,
#              then DISCONNECT
#   qos1       one session publishing 100-byte QoS 1 messages, each after the PUBACK before it
#              (p50/p99 PUBACK round trip)
#   qos0       one session publishing 100-byte QoS 0 messages (a PINGREQ round trip every 1,000)
# (One session at a time: the load has one device, and a broker keeps one session per client id.)
# Rates per core of server CPU (Fleetward and its broker together, from /proc/PID/stat, against
# mosquitto alone). Medians of 3 runs.
# Usage: [FLEETWARD_BIN=…] bench/mqtt.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
for tool in openssl curl taskset python3 cc; do
  command -v "$tool" >/dev/null || { echo "bench/mqtt.sh: needs $tool" >&2; exit 1; }
done
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "bench/mqtt.sh: needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-mqtt-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
load=$work/mqtt_load
cc -O2 -o "$load" bench/mqtt_load.c -lssl -lcrypto || { echo "bench/mqtt.sh: needs cc and libssl-dev" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One measured run: prints "rate cpu_share per_core p50 p99". PIDS is a comma-separated list.
measure() { # pids port mode
  local pids=$1 port=$2 mode=$3 before=0 after=0 start end count=0 p50=0 p99=0 sessions=1 pid out
  for pid in ${pids//,/ }; do before=$((before + $(cpu_ticks "$pid"))); done
  start=$(date +%s.%N)
  for i in $(seq 1 "$sessions"); do
    taskset -c 1 "$load" 127.0.0.1 "$port" "$dir/dev.pem" "$dir/dev.key" "$dir/data/ca/root.pem" bench-1 \
      "devices/bench-1/telemetry" "$seconds" "$mode" >"$work/load.$i" 2>&1 &
  done
  wait $(jobs -p | tail -"$sessions") 2>/dev/null || true
  end=$(date +%s.%N)
  for pid in ${pids//,/ }; do after=$((after + $(cpu_ticks "$pid"))); done
  for i in $(seq 1 "$sessions"); do
    out=$(cat "$work/load.$i")
    read -r n a b _ <<<"$out" || true
    if ! [[ "${n:-}" =~ ^[0-9]+$ ]] || [ "$n" -eq 0 ]; then echo "load failed: $out" >&2; echo "0 0 0 0 0"; return; fi
    count=$((count + n)); p50=$a; p99=$b
  done
  awk -v c="$count" -v a="$before" -v b="$after" -v t0="$start" -v t1="$end" -v tk="$ticks_per_second" -v p50="$p50" -v p99="$p99" \
    'BEGIN {rate = c / (t1 - t0); share = (b - a) / tk / (t1 - t0); printf "%.0f %.3f %.0f %s %s\n", rate, share, (share > 0 ? rate / share : 0), p50, p99}'
}

report() { # label quintuples…
  local label=$1; shift
  local rates=() shares=() cores=() p50s=() p99s=()
  while [ $# -gt 0 ]; do rates+=("$1"); shares+=("$2"); cores+=("$3"); p50s+=("$4"); p99s+=("$5"); shift 5; done
  local core latency=""
  core=$(printf '%s\n' "${cores[@]}" | median)
  [ "$(printf '%s\n' "${p50s[@]}" | median)" != 0 ] &&
    latency=", PUBACK p50 $(printf '%s\n' "${p50s[@]}" | median) µs p99 $(printf '%s\n' "${p99s[@]}" | median) µs"
  printf '%-40s median %6s/s, server CPU %s cores, per server core %6s/s%s (runs: %s)\n' "$label" \
    "$(printf '%s\n' "${rates[@]}" | median)" "$(printf '%s\n' "${shares[@]}" | median)" "$core" "$latency" "${cores[*]}"
  echo "$core" >"$work/last-per-core"
}

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores"
echo "mosquitto: $("$mosquitto" -h 2>/dev/null | head -1)"
dir="$work/fleet"; mkdir -p "$dir"
"$fleetward" init --data "$dir/data" --kdf-iterations 100000 >/dev/null 2>&1
printf 'id,secret,key_sha256,model,metadata\nbench-1,bench-secret-0000000001,,bench,\n' >"$dir/allow.csv"
"$fleetward" devices import --data "$dir/data" "$dir/allow.csv" --json >/dev/null
fw_port=$(free_port)
taskset -c 0 "$fleetward" serve --data "$dir/data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 \
  --mqtt-listen "127.0.0.1:$fw_port" >"$dir/serve.out" 2>"$dir/serve.err" &
fw=$!; bench_pids+=("$fw")
for _ in $(seq 1 150); do [ "$(grep -c ' listening on ' "$dir/serve.out")" -ge 4 ] && break; sleep 0.1; done
grep -q '^MQTT listening' "$dir/serve.out" || { echo "bench/mqtt.sh: serve did not open MQTT: $(cat "$dir/serve.err")" >&2; exit 1; }
broker=$(pgrep -P "$fw" -f mosquitto | head -1)
[ -n "$broker" ] || { echo "bench/mqtt.sh: serve's mosquitto is not running" >&2; exit 1; }
bench_pids+=("$broker")  # serve is killed with -9 at the end, which its child would outlive
taskset -p -c 0 "$broker" >/dev/null
est=$(grep '^EST listening' "$dir/serve.out" | grep -o 'https://[0-9.]*:[0-9]*')
bench_enroll "$dir" "$est" bench-1 bench-secret-0000000001

# mosquitto serving mutual TLS itself, with the same certificate, key and client CAs.
mq_port=$(free_port)
bench_mosquitto_tls "$dir/data" "$dir" "$mq_port"
taskset -c 0 "$mosquitto" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
mq=$!; bench_pids+=("$mq")
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mq_port") 2>/dev/null && break; sleep 0.05; done
kill -0 "$mq" 2>/dev/null || { echo "bench/mqtt.sh: mosquitto did not start: $(cat "$dir/mosquitto.log")" >&2; exit 1; }

for mode in connect qos1 qos0; do
  fw_runs=(); mq_runs=()
  for run in 1 2 3; do
    echo "$mode, run $run/3…" >&2
    read -r -a result < <(measure "$fw,$broker" "$fw_port" "$mode"); fw_runs+=("${result[@]}")
    read -r -a result < <(measure "$mq" "$mq_port" "$mode"); mq_runs+=("${result[@]}")
  done
  case $mode in
    connect) what="handshake + CONNECT/CONNACK" ;;
    qos1) what="QoS 1 publishes, 1 session" ;;
    qos0) what="QoS 0 publishes, 1 session" ;;
  esac
  report "fleetward → mosquitto, $what:" "${fw_runs[@]}"; fw_core=$(cat "$work/last-per-core")
  report "mosquitto TLS alone, $what:" "${mq_runs[@]}"; mq_core=$(cat "$work/last-per-core")
  echo "fleetward / mosquitto per server core: $(awk -v a="$fw_core" -v b="$mq_core" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
done
