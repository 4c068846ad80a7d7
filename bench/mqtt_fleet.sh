#!/usr/bin/env bash
# MQTT with a fleet behind the front door: `fleetward serve`'s MQTT listener forwarding to the
# mosquitto it supervises, beside Debian's mosquitto serving mutual TLS 1.3 itself
# (`require_certificate true`, `use_identity_as_username true`, `set_tcp_nodelay true`, the same
# server certificate and client CAs). Every device is enrolled through EST (bench/enroll_fleet.py;
# one key shared by the bench fleet, a certificate per device). Servers on core 0, load on core 1.
#   messages   bench/mqtt_fanin.c: 100 publishers (pub-001…) to one subscriber (`sink`, whose
#              model's policy lets it subscribe to devices/+/telemetry), 100-byte payloads,
#              QoS 1 (each publisher waits for its PUBACK) and QoS 0 (a PINGREQ round trip every
#              100); messages delivered per second per core of server CPU (Fleetward + its
#              broker, against mosquitto alone), publish → delivery p50/p99. Medians of 3.
#   idle       bench/hold.py: N idle MQTT sessions (default 9,900), one per device, each
#              CONNECT/CONNACK checked; memory growth per session (Fleetward + its broker, against
#              mosquitto alone), all still open after a pause.
#   revocation bench/hold.py: M live sessions (default 9,900); 100 devices are revoked through
#              the management API one call after another; time from each call to its session's
#              DISCONNECT and close: p50, p99, max; no other session closed.
# Each session costs the front door two descriptors (the device's and its broker leg), and a
# process here may hold 20,000 (a hard limit even root cannot raise in this container): 9,900
# sessions is the most that fits; on a host allowing more, pass 19000 and 10000.
# PARTS (default "messages idle revocation") picks what runs.
# Usage: [FLEETWARD_BIN=…] [PARTS=…] bench/mqtt_fleet.sh [seconds-per-run] [idle-sessions] [live-sessions]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
idle=${2:-9900}
live=${3:-9900}
for tool in openssl curl taskset python3 cc; do
  command -v "$tool" >/dev/null || { echo "bench/mqtt_fleet.sh: needs $tool" >&2; exit 1; }
done
python3 -c 'import cryptography' 2>/dev/null || { echo "bench/mqtt_fleet.sh: needs python3 with cryptography (pip install cryptography)" >&2; exit 1; }
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "bench/mqtt_fleet.sh: needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-mqtt-fleet.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
fanin=$work/mqtt_fanin
cc -O2 -pthread -o "$fanin" bench/mqtt_fanin.c -lssl -lcrypto || { echo "bench/mqtt_fleet.sh: needs cc and libssl-dev" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
parts=${PARTS:-messages idle revocation}
has() { [[ " $parts " == *" $1 "* ]]; }
devices=0
has idle && devices=$idle
has revocation && [ "$live" -gt "$devices" ] && devices=$live

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores, open files $(ulimit -n)"
echo "mosquitto: $("$mosquitto" -h 2>/dev/null | head -1)"

data=$work/data; certs=$work/certs
"$fleetward" init --data "$data" --kdf-iterations 100000 >/dev/null 2>&1
{
  echo "id,secret,key_sha256,model,metadata"
  echo "sink,sink-secret-0000000001,,sink,"
  for i in $(seq -f '%03g' 1 100); do echo "pub-$i,pub-secret-0000000$i,,bench,"; done
  awk -v n="$devices" 'BEGIN {for (i = 1; i <= n; i++) printf "mq-%06d,mq-secret-00000000%06d,,bench,\n", i, i}'
} >"$work/allow.csv"
"$fleetward" devices import --data "$data" "$work/allow.csv" --json >/dev/null
cat >"$work/sink-policy.json" <<'JSON'
{"statements": [
  {"effect": "allow", "actions": ["connect"]},
  {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/+/telemetry"]}
]}
JSON
"$fleetward" mqtt-policy set --data "$data" model:sink "$work/sink-policy.json" >/dev/null
token=$("$fleetward" token create --data "$data" --role admin 2>/dev/null)
fw_port=$(free_port)
taskset -c 0 "$fleetward" serve --data "$data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 \
  --mqtt-listen "127.0.0.1:$fw_port" --max-connections 20000 --max-connections-per-address 20000 >"$work/serve.out" 2>"$work/serve.err" &
fw=$!; bench_pids+=("$fw")
for _ in $(seq 1 150); do [ "$(grep -c ' listening on ' "$work/serve.out")" -ge 4 ] && break; sleep 0.1; done
grep -q '^MQTT listening' "$work/serve.out" || { echo "bench/mqtt_fleet.sh: serve did not open MQTT: $(cat "$work/serve.err")" >&2; exit 1; }
broker=$(pgrep -P "$fw" -f mosquitto | head -1)
[ -n "$broker" ] || { echo "bench/mqtt_fleet.sh: serve's mosquitto is not running" >&2; exit 1; }
bench_pids+=("$broker")
taskset -p -c 0 "$broker" >/dev/null
est=$(grep '^EST listening' "$work/serve.out" | grep -o 'https://[0-9.]*:[0-9]*')
api=$(grep '^management API listening' "$work/serve.out" | grep -o 'http://[0-9.]*:[0-9]*' | head -1)

echo "Enrolling $((devices + 101)) devices through EST…" >&2
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/fleet.key" -subj / -outform DER -out "$work/fleet.csr" 2>/dev/null
tail -n +2 "$work/allow.csv" | cut -d, -f1,2 >"$work/secrets.txt"
enrolled_at=$(date +%s.%N)
taskset -c 1 python3 bench/enroll_fleet.py "$est" "$data/ca/root.pem" "$data/ca/issuing.pem" "$work/fleet.key" "$work/fleet.csr" "$certs" @"$work/secrets.txt"
echo "enrolled:  $((devices + 101)) devices in $(awk -v a="$enrolled_at" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s (Python EST client, one connection)"

# mosquitto serving mutual TLS itself, with the same certificate, key and client CAs.
mq_port=$(free_port)
bench_mosquitto_tls "$data" "$work" "$mq_port"
start_mosquitto() {
  taskset -c 0 "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  mq=$!; bench_pids+=("$mq")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mq_port") 2>/dev/null && break; sleep 0.05; done
  kill -0 "$mq" 2>/dev/null || { echo "bench/mqtt_fleet.sh: mosquitto did not start: $(cat "$work/mosquitto.log")" >&2; exit 1; }
}
stop_mosquitto() { kill "$mq" 2>/dev/null; wait "$mq" 2>/dev/null || true; }
start_mosquitto

# One fan-in run: prints "delivered/s cpu-share per-core p50 p99".
fanin_run() { # pids port qos
  local pids=$1 port=$2 qos=$3 before=0 after=0 pid out
  for pid in ${pids//,/ }; do before=$((before + $(cpu_ticks "$pid"))); done
  local start end
  start=$(date +%s.%N)
  out=$(taskset -c 1 "$fanin" 127.0.0.1 "$port" "$data/ca/root.pem" "$certs" sink 100 "$seconds" "$qos" 2>"$work/fanin.err") || {
    echo "fan-in failed: $(cat "$work/fanin.err")" >&2; echo "0 0 0 0 0"; return; }
  end=$(date +%s.%N)
  for pid in ${pids//,/ }; do after=$((after + $(cpu_ticks "$pid"))); done
  [ -s "$work/fanin.err" ] && echo "  note: $(head -c 300 "$work/fanin.err")" >&2
  read -r published delivered p50 p99 elapsed <<<"$out"
  echo "  port $port QoS $qos: published $published, delivered $delivered in $elapsed s" >&2
  # CPU over the whole run (connects and drain included) against messages over the publishing
  # window: the per-core figure charges the servers for their connects too, alike for both.
  awk -v d="$delivered" -v e="$elapsed" -v a="$before" -v b="$after" -v t0="$start" -v t1="$end" -v tk="$ticks_per_second" -v p50="$p50" -v p99="$p99" \
    'BEGIN {rate = d / e; cpu = (b - a) / tk; printf "%.0f %.3f %.0f %s %s\n", rate, cpu / (t1 - t0), (cpu > 0 ? d / cpu : 0), p50, p99}'
}
fanin_report() { # label quintuples…
  local label=$1; shift
  local rates=() shares=() cores=() p50s=() p99s=()
  while [ $# -gt 0 ]; do rates+=("$1"); shares+=("$2"); cores+=("$3"); p50s+=("$4"); p99s+=("$5"); shift 5; done
  printf '%-44s median %7s msg/s, per server core %7s msg/s, p50 %s µs, p99 %s µs (per core runs: %s)\n' "$label" \
    "$(printf '%s\n' "${rates[@]}" | median)" "$(printf '%s\n' "${cores[@]}" | median)" \
    "$(printf '%s\n' "${p50s[@]}" | median)" "$(printf '%s\n' "${p99s[@]}" | median)" "${cores[*]}"
  printf '%s\n' "${cores[@]}" | median >"$work/last-per-core"
}
for qos in 1 0; do
  has messages || break
  fw_runs=(); mq_runs=()
  for run in 1 2 3; do
    echo "100 publishers → 1 subscriber, QoS $qos, run $run/3…" >&2
    read -r -a result < <(fanin_run "$fw,$broker" "$fw_port" "$qos"); fw_runs+=("${result[@]}")
    read -r -a result < <(fanin_run "$mq" "$mq_port" "$qos"); mq_runs+=("${result[@]}")
  done
  fanin_report "fleetward → mosquitto, QoS $qos, 100 → 1:" "${fw_runs[@]}"; fw_core=$(cat "$work/last-per-core")
  fanin_report "mosquitto TLS alone, QoS $qos, 100 → 1:" "${mq_runs[@]}"; mq_core=$(cat "$work/last-per-core")
  echo "fleetward / mosquitto per server core, QoS $qos: $(awk -v a="$fw_core" -v b="$mq_core" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
done


if has idle; then
echo "Idle: $idle MQTT sessions through the front door…" >&2
echo "fleetward → mosquitto, idle sessions: $(taskset -c 1 python3 bench/hold.py hold --target mqtt --port "$fw_port" --ca "$data/ca/root.pem" \
  --certs "$certs" --prefix mq- --count "$idle" --pid "$fw,$broker" --pause 5)"
echo "Idle: $idle MQTT sessions to mosquitto alone…" >&2
stop_mosquitto; start_mosquitto
echo "mosquitto TLS alone, idle sessions:  $(taskset -c 1 python3 bench/hold.py hold --target mqtt --port "$mq_port" --ca "$data/ca/root.pem" \
  --certs "$certs" --prefix mq- --count "$idle" --pid "$mq" --pause 5)"
fi
stop_mosquitto

has revocation || exit 0
echo "Revocation: $live live MQTT sessions, 100 devices revoked…" >&2
echo "fleetward, revoke → DISCONNECT with $live sessions: $(taskset -c 1 python3 bench/hold.py cutoff --target mqtt --port "$fw_port" \
  --ca "$data/ca/root.pem" --certs "$certs" --prefix mq- --count "$live" --api "$api" --token "$token" --suspend 100 --action revoke)"
