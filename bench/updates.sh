#!/usr/bin/env bash
# Update delivery: one artifact (200 MB by default) downloaded by 16 devices at once over the
# gateway's mTLS (`GET /v1/updates/{sha256}`, registry check and streaming from disk), beside
# Debian's nginx serving the same file over mTLS with the same server certificate, key and client
# CAs. Both servers are pinned to core 0; the 16 curl clients share core 1. Reports aggregate
# throughput, server CPU, throughput per server core (bytes / server CPU seconds: the fair figure
# when the clients' decryption bounds both), and the server's resident memory before and at its
# peak during the run (the file is streamed, never held whole). Medians of 3 runs, alternating.
# Usage: [FLEETWARD_BIN=…] [SIZE_MB=200] [CLIENTS=16] bench/updates.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-200}
clients=${CLIENTS:-16}
for tool in openssl curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench/updates.sh: needs $tool" >&2; exit 1; }
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "bench/updates.sh: needs nginx (apt-get install nginx)" >&2; exit 1; }
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-updates-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
dir=$work

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores"
"$fleetward" init --data "$dir/data" --kdf-iterations 100000 >/dev/null 2>&1
printf 'id,secret,key_sha256,model,metadata\nbench-1,bench-secret-0000000001,,bench,\n' >"$dir/allow.csv"
"$fleetward" devices import --data "$dir/data" "$dir/allow.csv" --json >/dev/null
echo "making a $size_mb MB artifact and publishing it…" >&2
head -c "$((size_mb * 1000 * 1000))" /dev/urandom >"$dir/firmware.img"
sha=$("$fleetward" release publish --data "$dir/data" "$dir/firmware.img" --version 1.0.0 --model bench --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["manifest"]["artifact"]["sha256"])')

taskset -c 0 "$fleetward" serve --data "$dir/data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --mqtt-listen off \
  >"$dir/serve.out" 2>"$dir/serve.err" &
fw=$!; bench_pids+=("$fw")
for _ in $(seq 1 100); do [ "$(grep -c ' listening on ' "$dir/serve.out")" -ge 3 ] && break; sleep 0.1; done
est=$(grep '^EST listening' "$dir/serve.out" | grep -o 'https://[0-9.]*:[0-9]*')
fw_port=$(grep '^gateway listening' "$dir/serve.out" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
bench_enroll "$dir" "$est" bench-1 bench-secret-0000000001
ng_port=$(free_port)
bench_nginx_mtls "$dir" "$ng_port" "location /v1/updates/ { alias $dir/data/releases/artifacts/; default_type application/octet-stream; }"
taskset -c 0 "$nginx" -c "$dir/nginx.conf" -p "$dir/nginx" &
ng=$!; bench_pids+=("$ng")
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ng_port/" && break; sleep 0.05; done

# One run: CLIENTS parallel downloads; prints "MB/s server_cpu_share MB/s_per_core rss_before_kib rss_peak_kib".
measure() { # pid port
  local pid=$1 port=$2 before after start end rss0 peak rss i failed=0
  rss0=$(rss_kib "$pid"); peak=$rss0
  before=$(cpu_ticks "$pid"); start=$(date +%s.%N)
  local downloads=()
  for i in $(seq 1 "$clients"); do
    taskset -c 1 curl -s -S --cert "$dir/dev.pem" --key "$dir/dev.key" --cacert "$dir/data/ca/root.pem" \
      -o /dev/null -w '%{http_code} %{size_download}\n' "https://127.0.0.1:$port/v1/updates/$sha" >"$dir/curl-$i.out" 2>&1 &
    downloads+=($!)
  done
  while :; do
    rss=$(rss_kib "$pid"); [ "$rss" -gt "$peak" ] && peak=$rss
    local running=0
    for i in "${downloads[@]}"; do kill -0 "$i" 2>/dev/null && running=1; done
    [ "$running" = 0 ] && break
    sleep 0.1
  done
  for i in "${downloads[@]}"; do wait "$i" || failed=1; done
  end=$(date +%s.%N); after=$(cpu_ticks "$pid")
  for i in $(seq 1 "$clients"); do
    read -r code got <"$dir/curl-$i.out" || true
    if [ "${code:-}" != 200 ] || [ "${got:-0}" != "$((size_mb * 1000 * 1000))" ]; then failed=1; echo "download $i: $(cat "$dir/curl-$i.out")" >&2; fi
  done
  [ "$failed" = 0 ] || { echo "0 0 0 $rss0 $peak"; return; }
  awk -v n="$clients" -v mb="$size_mb" -v a="$before" -v b="$after" -v t0="$start" -v t1="$end" -v tk="$ticks_per_second" \
    -v r0="$rss0" -v rp="$peak" \
    'BEGIN {rate = n * mb / (t1 - t0); share = (b - a) / tk / (t1 - t0); printf "%.0f %.3f %.0f %d %d\n", rate, share, (share > 0 ? rate / share : 0), r0, rp}'
}

fw_runs=(); ng_runs=()
for run in 1 2 3; do
  echo "run $run/3…" >&2
  fw_runs+=("$(measure "$fw" "$fw_port")")
  ng_runs+=("$(measure "$ng" "$ng_port")")
done
report() { # label runs…
  local label=$1; shift
  local rate share core peak0 peak
  rate=$(printf '%s\n' "$@" | awk '{print $1}' | median)
  share=$(printf '%s\n' "$@" | awk '{print $2}' | median)
  core=$(printf '%s\n' "$@" | awk '{print $3}' | median)
  peak0=$(printf '%s\n' "$@" | awk '{print $4}' | head -1)
  peak=$(printf '%s\n' "$@" | awk '{print $5}' | sort -n | tail -1)
  printf '%-22s median %5s MB/s, server CPU %s cores, per server core %5s MB/s; RSS %d MiB before, %d MiB peak (runs MB/s: %s)\n' \
    "$label" "$rate" "$share" "$core" "$((peak0 / 1024))" "$((peak / 1024))" "$(printf '%s\n' "$@" | awk '{printf "%s ", $1}')"
  echo "$rate $core" >"$work/last"
}
echo "$clients clients x $size_mb MB, mTLS TLS 1.3:"
report "fleetward gateway:" "${fw_runs[@]}"; read -r fw_rate fw_core <"$work/last"
report "nginx:" "${ng_runs[@]}"; read -r ng_rate ng_core <"$work/last"
echo "fleetward / nginx throughput: $(awk -v a="$fw_rate" -v b="$ng_rate" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'), per server core: $(awk -v a="$fw_core" -v b="$ng_core" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
