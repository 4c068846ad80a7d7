#!/usr/bin/env bash
# An encrypted update beside a plain one, in the same run: `fleetward-agent update apply` on core 1
# taking a SIZE_MB image from `fleetward serve` on core 0 — check, download over mTLS in Range
# requests, verify the signed hash, write into the inactive slot, fsync, switch — once published
# plain (channel plain) and once with `release publish --encrypt` (channel enc: the key fetched
# wrapped with HPKE and unwrapped by ECDH, every 64 KiB chunk AES-256-GCM-decrypted on the way into
# the slot, the result checked against the signed plaintext hash). A fresh device per run and
# flavour (a device takes a release once). Reports MB/s of image installed and the agent's CPU
# seconds; medians of 3 runs, alternating. Usage: [SIZE_MB=64] bench/encrypted_update.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-64}
for tool in taskset python3; do command -v "$tool" >/dev/null || { echo "bench/encrypted_update.sh: needs $tool" >&2; exit 1; }; done
. bench/lib.sh
work=$(mktemp -d /tmp/fleetward-encrypted-bench.XXXXXX)
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)
echo "Building fleetward-agent (release)…" >&2
swift build -c release --product fleetward-agent >&2
agent=$PWD/.build/release/fleetward-agent
dir=$work

echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(nproc) cores"
"$fleetward" init --data "$dir/data" --kdf-iterations 100000 >/dev/null 2>&1
{
  echo "id,secret,key_sha256,model,metadata"
  for flavour in plain enc; do for run in 1 2 3; do echo "bench-$flavour-$run,bench-secret-000000000$run,,bench,"; done; done
} >"$dir/allow.csv"
"$fleetward" devices import --data "$dir/data" "$dir/allow.csv" --json >/dev/null
echo "making a $size_mb MB image and publishing it plain and encrypted…" >&2
head -c "$((size_mb * 1000 * 1000))" /dev/urandom >"$dir/firmware.img"
"$fleetward" release publish --data "$dir/data" "$dir/firmware.img" --version 1.0.0 --model bench --channel plain --json >/dev/null
"$fleetward" release publish --data "$dir/data" "$dir/firmware.img" --version 1.0.1 --model bench --channel enc --encrypt --json >/dev/null

taskset -c 0 "$fleetward" serve --data "$dir/data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 --mqtt-listen off \
  >"$dir/serve.out" 2>"$dir/serve.err" &
bench_pids+=("$!")
for _ in $(seq 1 100); do [ "$(grep -c ' listening on ' "$dir/serve.out")" -ge 3 ] && break; sleep 0.1; done
est=$(grep '^EST listening' "$dir/serve.out" | grep -o '127.0.0.1:[0-9]*')
gateway=$(grep '^gateway listening' "$dir/serve.out" | grep -o '127.0.0.1:[0-9]*')
"$fleetward" provisioning-config --data "$dir/data" --est "$est" --gateway "$gateway" --out "$dir/provisioning.json" >/dev/null
device() { echo "--config $dir/provisioning.json --credentials $dir/$1/credentials --unique-key $dir/$1-partition/device.key"; }
for flavour in plain enc; do
  for run in 1 2 3; do
    # shellcheck disable=SC2046
    "$agent" enroll $(device "bench-$flavour-$run") --id "bench-$flavour-$run" --secret "bench-secret-000000000$run" >/dev/null
  done
done

# One apply; prints "MB/s agent_cpu_seconds".
measure() { # flavour run
  local name="bench-$1-$2" start end cpu
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  cpu=$( { TIMEFORMAT='%U %S'; time taskset -c 1 "$agent" update apply $(device "$name") --model bench --channel "$1" --slots "$dir/$name/slots" >"$dir/$name.out" 2>"$dir/$name.err"; } 2>&1 )
  end=$(date +%s.%N)
  grep -q "installed 1.0." "$dir/$name.out" || { echo "$name did not install: $(cat "$dir/$name.err")" >&2; exit 1; }
  cmp -s "$dir/firmware.img" "$dir/$name/slots/slot-b" || { echo "$name installed another image" >&2; exit 1; }
  rm -f "$dir/$name/slots/slot-b"
  awk -v mb="$size_mb" -v t0="$start" -v t1="$end" -v cpu="$cpu" 'BEGIN {split(cpu, c, " "); printf "%.1f %.2f\n", mb / (t1 - t0), c[1] + c[2]}'
}
plain=(); enc=()
for run in 1 2 3; do
  echo "run $run/3…" >&2
  plain+=("$(measure plain "$run")")
  enc+=("$(measure enc "$run")")
done
p=$(printf '%s\n' "${plain[@]}" | awk '{print $1}' | median); pc=$(printf '%s\n' "${plain[@]}" | awk '{print $2}' | median)
e=$(printf '%s\n' "${enc[@]}" | awk '{print $1}' | median); ec=$(printf '%s\n' "${enc[@]}" | awk '{print $2}' | median)
echo "$size_mb MB image, update apply (download + verify + install + switch):"
echo "plain:     median $p MB/s, agent CPU $pc s (runs MB/s: $(printf '%s\n' "${plain[@]}" | awk '{printf "%s ", $1}'))"
echo "encrypted: median $e MB/s, agent CPU $ec s (runs MB/s: $(printf '%s\n' "${enc[@]}" | awk '{printf "%s ", $1}'))"
echo "encrypted / plain throughput: $(awk -v a="$e" -v b="$p" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
