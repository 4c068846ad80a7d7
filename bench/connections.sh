#!/usr/bin/env bash
# Idle device connections and revocation-to-disconnect time on the gateway.
#
# 1. Idle connections: bench/hold.py opens N mutual-TLS 1.3 connections (default 19,000; a
#    process here may hold 20,000 files) to `fleetward serve`'s gateway, each admitted (GET
#    /v1/whoami on the kept-alive connection) and then idle; then the same to Debian's mosquitto
#    (`require_certificate true`, `set_tcp_nodelay true`, the same server certificate and client
#    CAs, each connection an MQTT CONNECT/CONNACK). Reports the server's memory growth per
#    connection (VmRSS between 200 connections and all of them) and checks they all stay open.
# 2. Revocation to disconnect (run last): 10,000 live gateway connections spread over 100 devices; 10
#    devices are suspended through the management API, one call after another, and the time
#    from each call to each of that device's connections closing is measured: p50, p99, max.
# 3. Kept-alive requests: 32 connections send GET /v1/whoami one after another for 8 s, to the
#    gateway and to Debian's nginx (mTLS, same certificates, a static answer): answers per second
#    and per core of server CPU (the Python load generator saturates first). Median of 3 runs.
# The servers run on core 0, the load generator on core 1.
# Usage: [FLEETWARD_BIN=…] bench/connections.sh [idle-connections] [cutoff-connections]
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-19000}
live=${2:-10000}
for tool in openssl curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench/connections.sh: needs $tool" >&2; exit 1; }
done
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ ! -x "$mosquitto" ]; then
  echo "Installing mosquitto (apt-get)…" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >/dev/null
  mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
ulimit -n 20000 2>/dev/null || true
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-connections-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores, open files $(ulimit -n)"
echo "mosquitto: $("$mosquitto" -h 2>&1 | head -1)"

# A fleet of 100 enrolled devices: certificate chain (leaf, issuing CA) and key per device.
data="$work/data"; certs="$work/certs"; mkdir -p "$certs"
"$fleetward" init --data "$data" --kdf-iterations 100000 >/dev/null 2>&1
{ echo "id,secret,key_sha256,model,metadata"; for i in $(seq -w 1 100); do echo "conn-$i,conn-secret-000000000$i,,bench,"; done; } >"$work/allow.csv"
"$fleetward" devices import --data "$data" "$work/allow.csv" --json >/dev/null
token=$("$fleetward" token create --data "$data" --role admin 2>/dev/null)
taskset -c 0 "$fleetward" serve --data "$data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --mqtt-listen off \
  >"$work/serve.out" 2>"$work/serve.err" &
fw=$!; bench_pids+=("$fw")
for _ in $(seq 1 100); do [ "$(grep -c ' listening on ' "$work/serve.out")" -ge 3 ] && break; sleep 0.1; done
est=$(grep '^EST listening' "$work/serve.out" | grep -o 'https://[0-9.]*:[0-9]*')
api=$(grep '^management API listening' "$work/serve.out" | grep -o 'http://[0-9.]*:[0-9]*' | head -1)
gateway_port=$(grep '^gateway listening' "$work/serve.out" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
echo "Enrolling 100 devices…" >&2
for i in $(seq -w 1 100); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$certs/conn-$i.key" -subj / -outform DER 2>/dev/null \
    | base64 >"$work/csr.b64"
  curl -s --cacert "$data/ca/root.pem" -u "conn-$i:conn-secret-000000000$i" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$work/csr.b64" "$est/.well-known/est/simpleenroll" | base64 -d | openssl pkcs7 -inform DER -print_certs \
    | sed -n '/BEGIN/,/END/p' >"$certs/conn-$i.pem"
  cat "$data/ca/issuing.pem" >>"$certs/conn-$i.pem"
done

echo "Holding $idle idle connections on the gateway…" >&2
fw_idle=$(taskset -c 1 python3 bench/hold.py hold --target gateway --port "$gateway_port" --ca "$data/ca/root.pem" \
  --certs "$certs" --count "$idle" --pid "$fw")
echo "fleetward gateway, idle:  $fw_idle"

# mosquitto with the same server certificate (its key decrypted into the bench's temp dir) and CAs.
openssl pkey -in "$data/tls/gateway.key" -passin env:FLEETWARD_PASSPHRASE -out "$work/server.key"
cat "$data/ca/root.pem" "$data/ca/issuing.pem" >"$work/clients.pem"
mq_port=$(free_port)
cat >"$work/mosquitto.conf" <<EOF
user root
per_listener_settings false
allow_anonymous true
persistence false
log_dest none
max_connections -1
set_tcp_nodelay true
listener $mq_port 127.0.0.1
cafile $work/clients.pem
certfile $data/tls/gateway.pem
keyfile $work/server.key
require_certificate true
tls_version tlsv1.3
EOF
taskset -c 0 "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
mq=$!; bench_pids+=("$mq")
for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $mq_port), 1)" 2>/dev/null && break; sleep 0.05; done
echo "Holding $idle idle connections on mosquitto…" >&2
mq_idle=$(taskset -c 1 python3 bench/hold.py hold --target mosquitto --port "$mq_port" --ca "$data/ca/root.pem" \
  --certs "$certs" --count "$idle" --pid "$mq")
echo "mosquitto, idle:          $mq_idle"
kill -9 "$mq" 2>/dev/null || true; wait "$mq" 2>/dev/null || true

# Kept-alive requests, gateway beside nginx.
nginx=$(command -v nginx || echo /usr/sbin/nginx)
ng_port=$(free_port); mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log crit;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy; fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$ng_port ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $data/tls/gateway.pem;
        ssl_certificate_key $work/server.key;
        ssl_client_certificate $work/clients.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        location /v1/whoami { default_type application/json; return 200 '{"device":"conn-001"}'; }
    }
}
EOF
taskset -c 0 "$nginx" -c "$work/nginx.conf" -p "$work/nginx" &
ng=$!; bench_pids+=("$ng")
for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $ng_port), 1)" 2>/dev/null && break; sleep 0.05; done
requests() { # pid port: "rate share per_core"
  local before after start end out rate
  before=$(cpu_ticks "$1"); start=$(date +%s.%N)
  out=$(taskset -c 1 python3 bench/hold.py requests --port "$2" --ca "$data/ca/root.pem" --certs "$certs" --count 32 --seconds 8)
  end=$(date +%s.%N); after=$(cpu_ticks "$1")
  rate=$(python3 -c "import json, sys; print(json.loads(sys.argv[1])['perSecond'])" "$out")
  # The server's CPU over the whole run (connection setup included, a small part of 8 s).
  awk -v r="$rate" -v a="$before" -v b="$after" -v t0="$start" -v t1="$end" -v tk="$ticks_per_second" \
    'BEGIN {share = (b - a) / tk / (t1 - t0); printf "%s %.3f %.0f\n", r, share, (share > 0 ? r / share : 0)}'
}
fw_runs=(); ng_runs=()
for run in 1 2 3; do
  echo "Kept-alive requests, run $run/3…" >&2
  fw_runs+=("$(requests "$fw" "$gateway_port")"); ng_runs+=("$(requests "$ng" "$ng_port")")
done
summary() { printf '%s\n' "$@" | sort -k3 -n | awk '{a[NR]=$0} END {split(a[int((NR+1)/2)], m, " "); printf "median %s/s raw at %s core = %s/s per server core", m[1], m[2], m[3]}'; }
echo "fleetward gateway, kept-alive whoami: $(summary "${fw_runs[@]}") (runs: $(printf '%s; ' "${fw_runs[@]}"))"
echo "nginx mTLS, kept-alive whoami:        $(summary "${ng_runs[@]}") (runs: $(printf '%s; ' "${ng_runs[@]}"))"

# Last: it suspends ten devices.
echo "Revocation to disconnect with $live live connections…" >&2
cut=$(taskset -c 1 python3 bench/hold.py cutoff --port "$gateway_port" --ca "$data/ca/root.pem" --certs "$certs" \
  --count "$live" --api "$api" --token "$token" --suspend 10)
echo "fleetward gateway, cutoff: $cut"
